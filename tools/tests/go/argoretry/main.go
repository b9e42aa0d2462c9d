// Command argoretry connects to a PostgreSQL-speaking endpoint with lib/pq
// and reports whether Argo Workflows would retry the error it gets.
//
// Usage: argoretry -dsn 'postgres://user@host:port/db?sslmode=disable' [-timeout 10s]
//
// It opens the DSN with database/sql and the "postgres" driver (lib/pq, the
// driver Argo's workflow controller uses), pings, and runs `select 1` if the
// ping worked. It prints one line of JSON and exits 0:
//
//	{"ok":bool,"error":"<err.Error() or empty>","retryable":bool,"sqlstate":"<pq.Error Code or empty>"}
//
// Only a usage error exits non-zero. Built offline by ../build.sh.
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// argoNetworkPatterns and argoRetryable restate Argo Workflows' rule for
// "this database error is a network error, reconnect and retry":
// SessionProxy.isNetworkError in argoproj/argo-workflows util/sqldb/session.go
// (read at commit f016ad89eb26, added by #15006 "retry connections on network
// errors"). Argo applies it to the error of a failed operation, and again to
// each failed reconnect attempt (a non-network error ends the retries). The
// checks and their order are kept; the code is ours.
var argoNetworkPatterns = []string{
	"connection refused",
	"connection reset",
	"connection lost",
	"connection closed",
	"network is unreachable",
	"no route to host",
	"timeout",
	"broken pipe",
	"connection timed out",
	"i/o timeout",
	"connection aborted",
	"connection dropped",
	"server closed the connection",
	"bad connection",
	"invalid connection",
	"connection is not available",
	"connection has been closed",
	"driver: bad connection",
}

func argoRetryable(err error) bool {
	if err == nil {
		return false
	}
	// 1. Sentinel errors and socket errnos anywhere in the wrap chain.
	for _, target := range []error{
		io.ErrUnexpectedEOF, io.EOF,
		syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED, syscall.EPIPE,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	// 2. Lower-cased err.Error() containing one of the patterns.
	text := strings.ToLower(err.Error())
	for _, p := range argoNetworkPatterns {
		if strings.Contains(text, p) {
			return true
		}
	}
	// 3. A net.Error decides by Timeout() alone: Argo returns here, so the
	// two checks below are never reached for a net.Error.
	var netErr net.Error
	if errors.As(err, &netErr) {
		return netErr.Timeout()
	}
	// 4. database/sql's "connection is unusable" sentinels.
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)
}

type report struct {
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	Retryable bool   `json:"retryable"`
	SQLState  string `json:"sqlstate"`
}

// probe pings the DSN and runs `select 1`; it returns the first error.
func probe(ctx context.Context, dsn string) error {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	var one int
	return db.QueryRowContext(ctx, "select 1").Scan(&one)
}

func main() {
	dsn := flag.String("dsn", "", "lib/pq connection string (URL or key=value)")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()
	if *dsn == "" || flag.NArg() != 0 || *timeout <= 0 {
		fmt.Fprintln(os.Stderr, "usage: argoretry -dsn DSN [-timeout 10s]")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// lib/pq does not watch the context while it reads the startup reply, so
	// a silent server would hang PingContext: wait on the context as well.
	done := make(chan error, 1)
	go func() { done <- probe(ctx, *dsn) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("argoretry: no answer within %s: %w", *timeout, ctx.Err())
	}

	r := report{OK: err == nil, Retryable: argoRetryable(err)}
	if err != nil {
		r.Error = err.Error()
		var pqErr *pq.Error
		if errors.As(err, &pqErr) {
			r.SQLState = string(pqErr.Code)
		}
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	if err := out.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "argoretry:", err)
		os.Exit(1)
	}
}
