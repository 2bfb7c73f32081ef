// Go database/sql clients for the database span tests (tests/tests/db.rs): lib/pq and
// go-sql-driver/mysql, each running a fixed script of operations against a server the test
// started (user `app`, database `shop`, table `users`, made by db_clients.py pg-setup /
// my-setup). Built offline by the test from Debian's packages:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o db_go tests/peers/db_go/main.go
//
// Usage: DB_PASSWORD=... db_go pq|mysql PORT
// The password comes from the environment, never from argv: sonde exports
// process.command_line. Prints one JSON line of what it did (rows read, errors raised).
package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/go-sql-driver/mysql"
	"github.com/lib/pq"
)

type result struct {
	Rows   []int    `json:"rows"`
	Errors []string `json:"errors"`
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

// count reads every row of a query and returns how many there were.
func count(rows *sql.Rows, err error) int {
	if err != nil {
		fail("query", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		fail("rows", err)
	}
	return n
}

// The scenario of `postgres_go_pq_spans`, in order. lib/pq sends a query without arguments
// by the simple query protocol; one with arguments is prepared in a round trip of its own
// (Parse/Describe/Sync), then executed (Bind/Execute/Sync).
func pqClient(port, password string) result {
	dsn := (&url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("app", password),
		Host:     "127.0.0.1:" + port,
		Path:     "shop",
		RawQuery: "sslmode=disable",
	}).String()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		fail("open", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection: the spans come in the script's order
	var r result
	r.Rows = append(r.Rows, count(db.Query("SELECT name FROM users WHERE id = 1")))
	r.Rows = append(r.Rows, count(db.Query("SELECT name FROM users WHERE id = $1", 2)))
	stmt, err := db.Prepare("INSERT INTO users (id, name) VALUES ($1, $2)")
	if err != nil {
		fail("prepare", err)
	}
	if _, err := stmt.Exec(50, "pg-canary-go-insert"); err != nil {
		fail("insert", err)
	}
	stmt.Close()
	_, err = db.Exec("SELECT * FROM missing_table")
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		r.Errors = append(r.Errors, string(pqErr.Code))
	}
	return r
}

// The scenario of `mariadb_go_mysql_spans`, in order. go-sql-driver/mysql sends a query
// without arguments as COM_QUERY; one with arguments as COM_STMT_PREPARE, COM_STMT_EXECUTE,
// COM_STMT_CLOSE (no answer, no span).
func mysqlClient(port, password string) result {
	cfg := mysql.NewConfig()
	cfg.User = "app"
	cfg.Passwd = password
	cfg.Net = "tcp"
	cfg.Addr = "127.0.0.1:" + port
	cfg.DBName = "shop"
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		fail("open", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var r result
	r.Rows = append(r.Rows, count(db.Query("SELECT name FROM users WHERE id = 1")))
	r.Rows = append(r.Rows, count(db.Query("SELECT name FROM users WHERE id = ?", 2)))
	if _, err := db.Exec("INSERT INTO users (id, name) VALUES (?, ?)", 50, "my-canary-go-insert"); err != nil {
		fail("insert", err)
	}
	_, err = db.Exec("SELECT * FROM missing_table")
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		r.Errors = append(r.Errors, fmt.Sprint(myErr.Number))
	}
	return r
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: DB_PASSWORD=... db_go pq|mysql PORT")
		os.Exit(2)
	}
	password := os.Getenv("DB_PASSWORD")
	if password == "" {
		fail("DB_PASSWORD", errors.New("not set"))
	}
	var r result
	switch os.Args[1] {
	case "pq":
		r = pqClient(os.Args[2], password)
	case "mysql":
		r = mysqlClient(os.Args[2], password)
	default:
		fail("command", errors.New(os.Args[1]))
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}
