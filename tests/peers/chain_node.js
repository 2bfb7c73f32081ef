// One hop of a service chain, in Node: an http server that calls the next hop (keep-alive
// agent) for every request and answers with what it received and what the next hop said.
// Usage: node chain_node.js PORT NEXT_HOST:NEXT_PORT
const http = require('http');
const [port, next] = [Number(process.argv[2]), process.argv[3]];
const [nextHost, nextPort] = next.split(':');
const agent = new http.Agent({ keepAlive: true });

http.createServer((req, res) => {
  const doc = { path: req.url, headers: Object.entries(req.headers) };
  http.get({ host: nextHost, port: Number(nextPort), path: req.url, agent }, (r) => {
    let body = '';
    r.setEncoding('utf8');
    r.on('data', (c) => (body += c));
    r.on('end', () => {
      doc.next = JSON.parse(body);
      const out = JSON.stringify(doc);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  }).on('error', (e) => { res.writeHead(502); res.end(String(e)); });
}).listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
