// Command cancels runs queries that a context cancels, with lib/pq (Argo
// Workflows' driver), and reports which the server honoured.
//
// Usage: cancels -dsn 'postgres://user:pw@host:port/db?sslmode=require' [-n 8]
//
// Each run takes a fresh connection (lib/pq closes a connection whose query
// was cancelled), asks which server it is on (inet_server_port()), then runs
// `select pg_sleep(10)` under a 300 ms deadline. lib/pq sends the
// CancelRequest on a new connection, encrypted when sslmode asks for TLS;
// the query returns at once when the server honours it, and only after
// 10 s when the cancel went to the wrong server. It prints one line of
// JSON and exits 0:
//
//	{"runs":[{"port":5433,"ms":312,"error":"pq: canceling statement due to user request"}, ...]}
//
// Built offline by ../build.sh.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	_ "github.com/lib/pq"
)

type run struct {
	Port  int    `json:"port"`
	Ms    int64  `json:"ms"`
	Error string `json:"error"`
}

func main() {
	dsn := flag.String("dsn", "", "lib/pq connection string")
	n := flag.Int("n", 8, "queries to cancel")
	flag.Parse()
	if *dsn == "" {
		fmt.Fprintln(os.Stderr, "usage: cancels -dsn DSN [-n N]")
		os.Exit(2)
	}
	db, err := sql.Open("postgres", *dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	db.SetMaxIdleConns(0)
	var runs []run
	for i := 0; i < *n; i++ {
		runs = append(runs, once(db))
	}
	out, _ := json.Marshal(map[string]interface{}{"runs": runs})
	fmt.Println(string(out))
}

func once(db *sql.DB) run {
	var r run
	conn, err := db.Conn(context.Background())
	if err != nil {
		r.Error = "connect: " + err.Error()
		return r
	}
	defer conn.Close()
	if err := conn.QueryRowContext(context.Background(), "select inet_server_port()").Scan(&r.Port); err != nil {
		r.Error = "port: " + err.Error()
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = conn.ExecContext(ctx, "select pg_sleep(10)")
	r.Ms = time.Since(start).Milliseconds()
	if err != nil {
		r.Error = err.Error()
	}
	return r
}
