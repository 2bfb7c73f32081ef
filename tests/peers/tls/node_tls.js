// Node.js https (OpenSSL embedded in the node binary, memory BIOs).
//
//   node node_tls.js server PORT CERT KEY   /hello 200; prints "ready PORT"
//   node node_tls.js get URL...             one keep-alive agent, GET each URL; prints statuses
const https = require('https');
const fs = require('fs');
const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'server') {
  const [port, cert, key] = args;
  https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    const ok = req.url === '/hello';
    const body = ok ? 'hello from node\n' : 'no\n';
    res.writeHead(ok ? 200 : 404, { 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }).listen(Number(port), '127.0.0.1', () => console.log(`ready ${port}`));
} else if (cmd === 'get') {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
  (async () => {
    for (const url of args) {
      const status = await new Promise((resolve, reject) => {
        https.get(url, { agent, headers: { 'User-Agent': 'node-tls/1.0' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode));
        }).on('error', reject);
      });
      console.log(status);
    }
    agent.destroy();
  })();
}
