// gRPC client with @grpc/grpc-js (Node's own HTTP/2 and HPACK): unary OK, unary NOT_FOUND,
// server streaming (2), on one channel. Usage: node node_client.js PORT
// (NODE_PATH must reach @grpc/grpc-js and @grpc/proto-loader: target/peers/node/node_modules)
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const path = require('path');

const port = process.argv[2];
const proto = grpc.loadPackageDefinition(loader.loadSync(path.join(__dirname, 'echo.proto'))).sonde.test;
const client = new proto.Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure());

client.Unary({ text: 'node', count: 2 }, (err, res) => {
  console.log(err ? err.code : res.text);
  client.Unary({ text: 'missing' }, (err2) => {
    console.log(err2 ? err2.code : 'no error');
    const texts = [];
    const call = client.ServerStream({ text: 'n', count: 2 });
    call.on('data', (m) => texts.push(m.text));
    call.on('end', () => { console.log(texts.join(',')); client.close(); });
    call.on('error', (e) => { console.log(e.code); client.close(); });
  });
});
