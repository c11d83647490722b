// BullMQ's side of bench/peers.py: MODE=enqueue adds JOBS jobs ({n}) with addBulk, 500 at a time, and
// prints {"start_ms", "enqueue_s"} as JSON on stderr; MODE=worker runs one Worker, concurrency 2, whose
// processor returns the job's data (the common workload), until SIGTERM.
const { Queue, Worker } = require('bullmq');

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT), maxRetriesPerRequest: null };
const name = 'bench';

async function enqueue() {
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  const count = Number(process.env.JOBS);
  const startMs = Date.now();
  const start = process.hrtime.bigint();
  for (let first = 0; first < count; first += 500) {
    const chunk = [];
    for (let i = first; i < Math.min(count, first + 500); i += 1) chunk.push({ name: 'echo', data: { n: i } });
    await queue.addBulk(chunk);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.error(JSON.stringify({ start_ms: startMs, enqueue_s: seconds }));
  await queue.close();
}

function work() {
  const worker = new Worker(name, async (job) => job.data, { connection, concurrency: 2 });
  process.on('SIGTERM', () => worker.close().then(() => process.exit(0)));
}

if (process.env.MODE === 'enqueue') enqueue().then(() => process.exit(0));
else work();
