// The original's 7-job_creator.js (Kue 0.11.6) at scale, for bench/jobs.py: JOBS jobs, the creator hears
// every job's end (progress, completed, failed lines printed as the original does). ONE_AT_A_TIME=1 creates
// each job only once the previous one has ended (latency at light load); ENQUEUE_ONLY=1 stops once all are
// saved. Prints its timings as JSON on stderr.
const kue = require('kue');

const queue = kue.createQueue({ redis: { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) } });
const count = Number(process.env.JOBS || 2000);
const oneAtATime = process.env.ONE_AT_A_TIME === '1';
const data = { phoneNumber: '4153518743', message: 'This is the code 4321 to verify your account' };
const latencies = [];
let saved = 0;
let ended = 0;
let enqueuedAt = null;
const start = process.hrtime.bigint();
const seconds = (t) => Number(t - start) / 1e9;

function finish() {
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.round(q * (latencies.length - 1)))];
  console.error(JSON.stringify({
    jobs: count, enqueue_s: enqueuedAt, total_s: seconds(process.hrtime.bigint()), p50_ms: at(0.5), p99_ms: at(0.99),
  }));
  process.exit(0);
}

function create() {
  const created = process.hrtime.bigint();
  const job = queue.create(process.env.QUEUE || 'push_notification_code_2', data).save((err) => {
    if (err) throw err;
    console.log(`Notification job created: ${job.id}`);
    saved += 1;
    if (saved === count) {
      enqueuedAt = seconds(process.hrtime.bigint());
      if (process.env.ENQUEUE_ONLY === '1') finish();
    }
  });
  const end = () => {
    latencies.push(Number(process.hrtime.bigint() - created) / 1e6);
    ended += 1;
    if (ended === count) finish();
    else if (oneAtATime) create();
  };
  job.on('complete', () => { console.log(`Notification job ${job.id} completed`); end(); });
  job.on('failed', (error) => { console.log(`Notification job ${job.id} failed: ${error}`); end(); });
  job.on('progress', (progress) => console.log(`Notification job ${job.id} ${progress}% complete`));
}

if (oneAtATime) create();
else for (let i = 0; i < count; i += 1) create();
