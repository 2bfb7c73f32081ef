// Node.js database clients for the database span tests (tests/tests/db.rs): node-postgres
// (`pg`, its own protocol code) and `mysql2`, each running a fixed script of operations
// against a server the test started (user `app`, database `shop`, table `users`, made by
// db_clients.py pg-setup / my-setup).
//
// Usage: DB_PASSWORD=... node db_node.js pg|mysql PORT
// The password comes from the environment, never from argv: sonde exports
// process.command_line. Prints one JSON line of what it did (rows read, errors raised) so the
// test can check the spans against it.
const [command, port] = [process.argv[2], Number(process.argv[3])];
const password = process.env.DB_PASSWORD;
if (!password) {
  console.error('DB_PASSWORD is not set');
  process.exit(2);
}

// The scenario of `postgres_node_pg_spans`, in order.
async function pgClient() {
  const { Client } = require('pg');
  const c = new Client({ host: '127.0.0.1', port, user: 'app', password, database: 'shop', ssl: false });
  await c.connect();
  const rows = [];
  // No values: the simple query protocol, the literal in the text.
  rows.push((await c.query('SELECT name FROM users WHERE id = 1')).rowCount);
  // Values: the extended protocol with the unnamed statement, the literal in Bind only.
  rows.push((await c.query('SELECT id, name FROM users WHERE name = $1', ['pg-canary-node'])).rowCount);
  // A named statement: Parse with the first execution, then Bind/Execute by name.
  const byId = { name: 'by-id', text: 'SELECT name FROM users WHERE id = $1' };
  rows.push((await c.query({ ...byId, values: [2] })).rowCount);
  rows.push((await c.query({ ...byId, values: [3] })).rowCount);
  await c.query('INSERT INTO users (id, name) VALUES ($1, $2)', [30, 'pg-canary-node-insert']);
  const errors = [];
  try {
    await c.query('SELECT * FROM missing_table WHERE id = $1', [5]);
  } catch (e) {
    errors.push(e.code);
  }
  const localPort = c.connection.stream.localPort;
  await c.end();
  return { local_port: localPort, rows, errors };
}

// The scenario of `mariadb_mysql2_spans`, in order.
async function mysqlClient() {
  const mysql = require('mysql2/promise');
  const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'app', password, database: 'shop' });
  const rows = [];
  // query(): the values are put into the text by the client (COM_QUERY).
  rows.push((await c.query('SELECT id, name FROM users WHERE name = ?', ['my-canary-node']))[0].length);
  // execute(): COM_STMT_PREPARE, then COM_STMT_EXECUTE; the second time from mysql2's cache.
  rows.push((await c.execute('SELECT name FROM users WHERE id = ?', [2]))[0].length);
  rows.push((await c.execute('SELECT name FROM users WHERE id = ?', [3]))[0].length);
  const errors = [];
  try {
    await c.query('SELECT * FROM missing_table');
  } catch (e) {
    errors.push(e.errno);
  }
  const localPort = c.connection.stream.localPort;
  await c.end();
  return { local_port: localPort, rows, errors };
}

const commands = { pg: pgClient, mysql: mysqlClient };
if (!commands[command]) {
  console.error(`unknown command ${command}`);
  process.exit(2);
}
commands[command]().then(
  (r) => console.log(JSON.stringify(r)),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
