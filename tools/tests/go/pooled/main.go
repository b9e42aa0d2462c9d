// Command pooled is a "pooled application" client: it runs short
// transactions through database/sql's connection pool and lib/pq, and reports
// which errors the application saw (for example while pglb drains, or during
// a rolling restart of pglb instances).
//
// Usage: pooled -dsn 'postgres://user:pass@host:port/db?sslmode=disable' [-pool 8] [-workers N] [-duration 10]
//
// Each of -workers (default: -pool) goroutines loops: take a connection from
// the pool (db.BeginTx), run `SELECT 1` and `SELECT pg_sleep(0.05)` as
// separate statements, COMMIT, give the connection back, then sleep a random
// 50-300 ms. The pool is db.SetMaxOpenConns(pool) and SetMaxIdleConns(pool).
// The program does no retries of its own: database/sql's internal retry on
// driver.ErrBadConn is the driver stack's behaviour and counts as transparent.
//
// After -duration seconds (or on SIGTERM/SIGINT) no new transaction starts,
// running ones finish, and it prints one line of JSON and exits 0:
//
//	{"driver":"go-lib/pq","committed":N,"errors":{"<message>":count},"cut_mid_flight":N,
//	 "errors_total":N,"errors_by_stage":{"begin":N,"select1":N,"sleep":N,"commit":N}}
//
// An error on BEGIN is a failed start; an error on a later statement (BEGIN
// had succeeded) counts as cut_mid_flight. Socket addresses in messages are
// replaced by "ADDR" so that messages group. Only a usage error exits
// non-zero. Built offline by ../build.sh (`build.sh OUTPUT pooled`).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"time"

	_ "github.com/lib/pq"
)

// addrRe matches an IPv4 or [IPv6] socket address inside an error message.
var addrRe = regexp.MustCompile(`(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d+`)

type tally struct {
	mu           sync.Mutex
	committed    int
	errors       map[string]int
	byStage      map[string]int
	cutMidFlight int
	errorsTotal  int
}

type report struct {
	Driver        string         `json:"driver"`
	Committed     int            `json:"committed"`
	Errors        map[string]int `json:"errors"`
	CutMidFlight  int            `json:"cut_mid_flight"`
	ErrorsTotal   int            `json:"errors_total"`
	ErrorsByStage map[string]int `json:"errors_by_stage"`
	Go            string         `json:"go"`
}

func (t *tally) fail(stage string, err error) {
	msg := addrRe.ReplaceAllString(err.Error(), "ADDR")
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errors[msg]++
	t.byStage[stage]++
	t.errorsTotal++
	if stage != "begin" {
		t.cutMidFlight++
	}
}

func (t *tally) commit() {
	t.mu.Lock()
	t.committed++
	t.mu.Unlock()
}

// transaction runs one application transaction; it returns the stage that
// failed and the error, or "" and nil.
func transaction(db *sql.DB) (string, error) {
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil) // takes a pooled connection and sends BEGIN
	if err != nil {
		return "begin", err
	}
	var one int
	if err := tx.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		_ = tx.Rollback()
		return "select1", err
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_sleep(0.05)"); err != nil {
		_ = tx.Rollback()
		return "sleep", err
	}
	if err := tx.Commit(); err != nil {
		return "commit", err
	}
	return "", nil
}

func main() {
	dsn := flag.String("dsn", "", "lib/pq connection string (URL or key=value)")
	pool := flag.Int("pool", 8, "pool size (SetMaxOpenConns and SetMaxIdleConns)")
	workers := flag.Int("workers", 0, "concurrent workers (default: -pool)")
	duration := flag.Float64("duration", 10, "run for this many seconds")
	flag.Parse()
	if *workers == 0 {
		*workers = *pool
	}
	if *dsn == "" || flag.NArg() != 0 || *pool <= 0 || *workers <= 0 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "usage: pooled -dsn DSN [-pool 8] [-workers N] [-duration 10]")
		os.Exit(2)
	}

	db, err := sql.Open("postgres", *dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pooled:", err)
		os.Exit(2)
	}
	db.SetMaxOpenConns(*pool)
	db.SetMaxIdleConns(*pool)

	stop := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-time.After(time.Duration(*duration * float64(time.Second))):
		case <-sigs:
		}
		close(stop)
	}()

	t := &tally{errors: map[string]int{}, byStage: map[string]int{}}
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if stage, err := transaction(db); err != nil {
					t.fail(stage, err)
				} else {
					t.commit()
				}
				pause := time.Duration(50+rng.Intn(251)) * time.Millisecond
				select {
				case <-stop:
					return
				case <-time.After(pause):
				}
			}
		}(time.Now().UnixNano() + int64(i))
	}
	wg.Wait()
	db.Close()

	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	err = out.Encode(report{
		Driver:        "go-lib/pq",
		Committed:     t.committed,
		Errors:        t.errors,
		CutMidFlight:  t.cutMidFlight,
		ErrorsTotal:   t.errorsTotal,
		ErrorsByStage: t.byStage,
		Go:            runtime.Version(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pooled:", err)
		os.Exit(1)
	}
}
