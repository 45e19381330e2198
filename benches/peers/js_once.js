// The official JS generator doing bedrock-keyd's `once` job: credentials and region
// from the default providers, one key, written atomically (temp file, fsync, rename,
// fsync of the directory). Usage: node js_once.js TARGET
const fs = require("fs");
const path = require("path");
const { getTokenProvider } = require("@aws/bedrock-token-generator");

(async () => {
  const token = await getTokenProvider({ region: process.env.AWS_REGION })();
  const target = path.resolve(process.argv[2]);
  const dir = path.dirname(target);
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, "wx", 0o600);
  fs.writeSync(fd, token + "\n");
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, target);
  const dfd = fs.openSync(dir, "r");
  fs.fsyncSync(dfd);
  fs.closeSync(dfd);
})();
