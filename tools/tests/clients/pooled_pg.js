#!/usr/bin/env node
// A "pooled application" client on node-postgres (`pg`) and its Pool.
//
//   node pooled_pg.js --dsn 'postgres://U:W@H:P/D?sslmode=disable' [--pool 8] [--workers N] [--duration 10]
//   node pooled_pg.js --host H --port P --user U --password W --database D [--pool 8] ...
//
// --dsn takes a URL or a libpq key=value string (host, port, user, password,
// dbname, sslmode, application_name). Each of --workers (default: --pool)
// async workers loops: `const client = await pool.connect()`, BEGIN,
// `SELECT 1`, `SELECT pg_sleep(0.05)`, COMMIT as separate queries, then
// `client.release(err)` (an error destroys the client instead of pooling it),
// then sleeps a random 50-300 ms. Pool is `new Pool({max: pool})`, other
// settings default. No retries of its own.
//
// pool.on('error') is attached, as node-postgres asks (an idle client's error
// would otherwise crash the process); those errors are not seen by the
// application and are counted apart, in idle_client_errors.
//
// After --duration seconds (or on SIGTERM/SIGINT) no new transaction starts,
// running ones finish, and it prints one line of JSON:
//
//   {"driver":"node-pg","committed":N,"errors":{"<message>":count},"cut_mid_flight":N,
//    "errors_total":N,"errors_by_stage":{...},"idle_client_errors":{"<message>":count},
//    "idle_client_errors_total":N,"checked_out_client_errors":{...},"checked_out_client_errors_total":N}
//
// An error on pool.connect() (stage acquire) or on BEGIN is a failed start; an
// error after BEGIN succeeded counts as cut_mid_flight.
// Install: npm ci in this directory (see install.sh).
'use strict'

const { parseArgs } = require('node:util')
const pg = require('pg')

// parseConninfo reads a libpq key=value connection string into pg's config.
function parseConninfo(s) {
  const out = {}
  const re = /\s*([A-Za-z_]+)\s*=\s*('((?:[^'\\]|\\.)*)'|(\S*))/gy
  let m
  let rest = s
  while ((m = re.exec(s)) !== null) {
    const key = m[1]
    const value = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[4]
    rest = s.slice(re.lastIndex)
    switch (key) {
      case 'host': out.host = value; break
      case 'port': out.port = Number(value); break
      case 'user': out.user = value; break
      case 'password': out.password = value; break
      case 'dbname': out.database = value; break
      case 'application_name': out.application_name = value; break
      case 'sslmode': out.ssl = value === 'disable' ? false : { rejectUnauthorized: !['require', 'prefer', 'allow'].includes(value) }; break
      case 'connect_timeout': out.connectionTimeoutMillis = Number(value) * 1000; break
      default: throw new Error(`unsupported conninfo keyword: ${key}`)
    }
  }
  if (rest.trim() !== '') throw new Error(`cannot parse conninfo near: ${rest}`)
  return out
}

function usage(msg) {
  if (msg) console.error(`pooled_pg: ${msg}`)
  console.error('usage: pooled_pg.js (--dsn DSN | --host H --port P --user U --password W --database D) [--pool 8] [--workers N] [--duration 10]')
  process.exit(2)
}

function count(map, key) {
  map[key] = (map[key] || 0) + 1
}

async function main() {
  let args
  try {
    args = parseArgs({
      options: {
        dsn: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        database: { type: 'string' },
        pool: { type: 'string', default: '8' },
        workers: { type: 'string', default: '0' },
        duration: { type: 'string', default: '10' },
      },
    }).values
  } catch (e) {
    usage(e.message)
  }
  const poolSize = Number(args.pool)
  const workers = Number(args.workers) || poolSize
  const duration = Number(args.duration)
  if (!(poolSize > 0) || !(workers > 0) || !(duration > 0)) usage('--pool, --workers and --duration must be positive')

  let config
  if (args.dsn !== undefined) {
    config = args.dsn.includes('://') ? { connectionString: args.dsn } : parseConninfo(args.dsn)
  } else {
    if (args.host === undefined) usage('need --dsn or --host/--port/--user/--password/--database')
    config = { host: args.host, port: Number(args.port || 5432), user: args.user, password: args.password, database: args.database, ssl: false }
  }

  const tally = { committed: 0, errors: {}, byStage: {}, cutMidFlight: 0, errorsTotal: 0, idle: {}, idleTotal: 0, checkedOut: {}, checkedOutTotal: 0 }
  const pool = new pg.Pool({ ...config, max: poolSize })
  pool.on('error', (err) => {
    count(tally.idle, err.message)
    tally.idleTotal++
  })

  function onCheckedOutError(err) {
    count(tally.checkedOut, err.message)
    tally.checkedOutTotal++
  }

  let stopped = false
  let wake = []
  const stop = () => {
    stopped = true
    for (const w of wake) w()
    wake = []
  }
  const timer = setTimeout(stop, duration * 1000)
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  const pause = (ms) => new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done() { clearTimeout(t); wake = wake.filter((w) => w !== done); resolve() }
    wake.push(done)
  })

  async function transaction() {
    let stage = 'acquire'
    let client
    try {
      client = await pool.connect()
      // While checked out, a client has no pool listener: an 'error' event
      // with no listener would end the process. A careful application
      // listens; what arrives here is counted apart.
      client.on('error', onCheckedOutError)
      stage = 'begin'
      await client.query('BEGIN')
      stage = 'select1'
      await client.query('SELECT 1')
      stage = 'sleep'
      await client.query('SELECT pg_sleep(0.05)')
      stage = 'commit'
      await client.query('COMMIT')
      client.removeListener('error', onCheckedOutError)
      client.release()
      tally.committed++
    } catch (err) {
      if (client) {
        client.removeListener('error', onCheckedOutError)
        client.release(err) // destroy it rather than pool it
      }
      count(tally.errors, err.message)
      count(tally.byStage, stage)
      tally.errorsTotal++
      if (stage !== 'acquire' && stage !== 'begin') tally.cutMidFlight++
    }
  }

  async function worker() {
    while (!stopped) {
      await transaction()
      if (stopped) break
      await pause(50 + Math.random() * 250)
    }
  }

  await Promise.all(Array.from({ length: workers }, worker))
  clearTimeout(timer)
  await pool.end()

  process.stdout.write(JSON.stringify({
    driver: 'node-pg',
    committed: tally.committed,
    errors: tally.errors,
    cut_mid_flight: tally.cutMidFlight,
    errors_total: tally.errorsTotal,
    errors_by_stage: tally.byStage,
    idle_client_errors: tally.idle,
    idle_client_errors_total: tally.idleTotal,
    checked_out_client_errors: tally.checkedOut,
    checked_out_client_errors_total: tally.checkedOutTotal,
    versions: { node: process.versions.node, pg: require('pg/package.json').version },
  }) + '\n')
}

main().catch((e) => {
  console.error('pooled_pg:', e)
  process.exit(1)
})
