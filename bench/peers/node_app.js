// The Node.js app of the overhead benchmark: an `http` server that, for every request, calls
// nginx (one keep-alive agent) and answers with its body. Run plain (untraced, or traced by
// sonde) or with the OpenTelemetry zero-code agent:
//   node --require @opentelemetry/auto-instrumentations-node/register node_app.js PORT UPSTREAM
// (NODE_PATH points at target/peers/otel-node/node_modules; the OTEL_* variables configure it).
// Usage: node node_app.js PORT UPSTREAM_PORT
'use strict';
const http = require('http');

const [port, upstream] = [Number(process.argv[2]), Number(process.argv[3])];
// Idle upstream sockets close after a second (the agent destroys a free socket on its timeout),
// so each benchmark cell opens its own connections: the untraced run's pool would otherwise
// carry over into the traced one, and sonde never injects into connections opened before it.
const agent = new http.Agent({ keepAlive: true, maxSockets: 256, timeout: 1000 });

http
  .createServer((req, res) => {
    http
      .get({ host: '127.0.0.1', port: upstream, path: '/', agent }, (up) => {
        const chunks = [];
        up.on('data', (c) => chunks.push(c));
        up.on('end', () => {
          const body = Buffer.concat(chunks);
          res.writeHead(up.statusCode, {
            'content-type': 'text/plain',
            'content-length': body.length,
          });
          res.end(body);
        });
      })
      .on('error', (e) => {
        res.writeHead(502);
        res.end(String(e));
      });
  })
  .listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
