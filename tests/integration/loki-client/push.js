// push.js -- a real Loki push client (winston + winston-loki) for tests/integration/test_logs_client.c.
//
// usage: node push.js URL json|protobuf APP COUNT TOKEN
// Logs COUNT lines "<mode> line <i> {"seq":<i>,"level":"info"}" (winston-loki adds the meta) with labels {app: APP, level: "info"} through
// winston-loki's batching transport, flushes, and prints {"content_type": ..., "failed": ...}: the
// content type tells which encoding the transport really used (it falls back to JSON silently when its
// snappy binding cannot load).
// SPDX-License-Identifier: Apache-2.0
'use strict'
const winston = require('winston')
const LokiTransport = require('winston-loki')

async function main () {
  const [url, mode, app, count, token] = process.argv.slice(2)
  let failed = false
  const transport = new LokiTransport({
    host: url,
    json: mode === 'json',
    labels: { app },
    batching: true,
    interval: 0.2,
    headers: { Authorization: `Bearer ${token}` },
    gracefulShutdown: false,
    onConnectionError: (err) => {
      failed = true
      console.error('connection error:', err && err.message)
    }
  })
  const logger = winston.createLogger({ level: 'info', transports: [transport] })
  for (let i = 0; i < Number(count); i++) {
    logger.info(`${mode} line ${i}`, { seq: i })
  }
  await new Promise((resolve) => setTimeout(resolve, 100))
  await transport.flush()
  console.log(JSON.stringify({ content_type: transport.batcher.contentType, failed }))
  process.exit(failed ? 1 : 0)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
