// The original's 7-job_processor.js (Kue 0.11.6), for bench/jobs.py and bench/concurrency.py. Configurable:
// the Redis address, CONCURRENCY (the original's 2) and NOTIFICATION_SEND_MS (0: each send takes that long,
// as the Python lesson's NOTIFICATION_SEND_MS does).
const kue = require('kue');

const queue = kue.createQueue({ redis: { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) } });
const blacklistedNumbers = ['4153518780', '4153518781'];

function sendNotification(phoneNumber, message, job, done) {
  job.progress(0, 100);
  if (blacklistedNumbers.includes(phoneNumber)) {
    return done(new Error(`Phone number ${phoneNumber} is blacklisted`));
  }
  job.progress(50, 100);
  const send = () => {
    console.log(`Sending notification to ${phoneNumber}, with message: ${message}`);
    done();
  };
  const sendMs = Number(process.env.NOTIFICATION_SEND_MS || 0);
  return sendMs > 0 ? setTimeout(send, sendMs) : send();
}

queue.process(process.env.QUEUE || 'push_notification_code_2', Number(process.env.CONCURRENCY || 2), (job, done) => {
  sendNotification(job.data.phoneNumber, job.data.message, job, done);
});
process.on('SIGTERM', () => queue.shutdown(5000, () => process.exit(0)));
