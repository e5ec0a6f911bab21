// An independent Arrow implementation (the npm package apache-arrow, JavaScript) on both sides of SaeSharp's support for
// SAELens's activation cache (CacheActivationsRunner's datasets folder); regenerates tests/data/saelens_cache (see
// tests/data/README.md).
//
//   mkdir /tmp/arrowjs && cd /tmp/arrowjs && npm install apache-arrow@21.2.0
//   NODE_PATH=/tmp/arrowjs/node_modules node bench/reference/saelens_cache_arrow_js.mjs write tests/data/saelens_cache
//   NODE_PATH=... node bench/reference/saelens_cache_arrow_js.mjs read tests/data/saelens_cache/saesharp_written \
//       > tests/data/saelens_cache/saesharp_written.js.json
//
// write DIR: writes by hand, from datasets' source (features/features.py: Array2D, _ArrayXDExtensionType; arrow_writer.py;
//   arrow_dataset.py save_to_disk) and SAELens's cache_activations_runner.py, two caches:
//   DIR/js_f32: hook column blocks.0.hook_resid_post = Array2D(shape=(3, 4), dtype="float32"), token_ids =
//     Sequence(Value("int32"), length=3); shards data-00000-of-00002.arrow (windows 0-1, one record batch) and
//     data-00001-of-00002.arrow (windows 2-4, record batches of 2 and 1 windows). Value [w, p, j] = w*100 + p*10 + j + 0.25,
//     token id [w, p] = w*10 + p.
//   DIR/js_f16_two_hooks: one shard of 2 windows, columns blocks.0.hook_resid_post and blocks.1.hook_mlp_out, both
//     Array2D(shape=(2, 3), dtype="float16"), value [w, p, j] = w*16 + p*4 + j + 0.5 (+1000 in the second), no token_ids.
//   Each Array2D field is list<list<T>> (datasets' storage type, variable-size lists) with the field metadata
//   ARROW:extension:name = datasets.features.features.Array2DExtensionType and ARROW:extension:metadata =
//   json.dumps((shape, dtype)); the schema's huggingface metadata is ArrowWriter._build_metadata's.
// read DIR: reads a save_to_disk folder's state.json, then each Arrow IPC stream it lists with tableFromIPC, and prints
//   the schema (names, types, nullability, field and schema metadata), the record batch sizes and every window's values.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const searchPaths = (process.env.NODE_PATH || '').split(':').filter(Boolean);
const arrow = require(require.resolve('apache-arrow', { paths: searchPaths }));
const arrowVersion = JSON.parse(fs.readFileSync(
  path.join(searchPaths.map((p) => path.join(p, 'apache-arrow')).find((p) => fs.existsSync(p)) || '.', 'package.json'), 'utf8')).version;
const { tableFromIPC, tableToIPC, vectorFromArray, List, FixedSizeList, Field, Float32, Float16, Int32, Schema, Table, RecordBatch } = arrow;

const EXT = 'datasets.features.features.Array2DExtensionType';
const pyJson = (v) => JSON.stringify(v).replace(/,/g, ', ').replace(/:/g, ': '); // Python json.dumps separators

function array2dField(name, ctx, d, dtype) {
  const leaf = dtype === 'float16' ? new Float16() : new Float32();
  const type = new List(new Field('item', new List(new Field('item', leaf, true)), true));
  const meta = new Map([['ARROW:extension:name', EXT], ['ARROW:extension:metadata', pyJson([[ctx, d], dtype])]]);
  return new Field(name, type, true, meta);
}

function writeShard(file, fields, features, batches) {
  // batches: list of { column name -> array of windows }
  const schema = new Schema(fields, new Map([['huggingface', pyJson({ info: { features } })]]));
  const rbs = batches.map((cols) => {
    const plain = new Table(Object.fromEntries(fields.map((f, i) => [f.name, vectorFromArray(cols[f.name], f.type)])));
    return new RecordBatch(schema, plain.batches[0].data);
  });
  fs.writeFileSync(file, tableToIPC(new Table(schema, rbs), 'stream'));
}

function writeFolder(dir, shardFiles, features) {
  fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({
    _data_files: shardFiles.map((filename) => ({ filename })), _fingerprint: 'fedcba9876543210', _format_columns: null,
    _format_kwargs: {}, _format_type: null, _output_all_columns: false, _split: null,
  }, null, 2));
  fs.writeFileSync(path.join(dir, 'dataset_info.json'), JSON.stringify({ citation: '', description: '', features, homepage: '', license: '' }, null, 2));
}

const [mode, dir] = process.argv.slice(2);
if (mode === 'write') {
  {
    const out = path.join(dir, 'js_f32');
    fs.mkdirSync(out, { recursive: true });
    const hook = 'blocks.0.hook_resid_post';
    const ctx = 3, d = 4;
    const features = {
      [hook]: { shape: [ctx, d], dtype: 'float32', _type: 'Array2D' },
      token_ids: { feature: { dtype: 'int32', _type: 'Value' }, length: ctx, _type: 'List' },
    };
    const fields = [array2dField(hook, ctx, d, 'float32'), new Field('token_ids', new FixedSizeList(ctx, new Field('item', new Int32(), true)), true)];
    const windows = (ws) => ({
      [hook]: ws.map((w) => Array.from({ length: ctx }, (_, p) => Array.from({ length: d }, (_, j) => w * 100 + p * 10 + j + 0.25))),
      token_ids: ws.map((w) => Array.from({ length: ctx }, (_, p) => w * 10 + p)),
    });
    writeShard(path.join(out, 'data-00000-of-00002.arrow'), fields, features, [windows([0, 1])]);
    writeShard(path.join(out, 'data-00001-of-00002.arrow'), fields, features, [windows([2, 3]), windows([4])]);
    writeFolder(out, ['data-00000-of-00002.arrow', 'data-00001-of-00002.arrow'], features);
  }
  {
    const out = path.join(dir, 'js_f16_two_hooks');
    fs.mkdirSync(out, { recursive: true });
    const hooks = ['blocks.0.hook_resid_post', 'blocks.1.hook_mlp_out'];
    const ctx = 2, d = 3;
    const features = Object.fromEntries(hooks.map((h) => [h, { shape: [ctx, d], dtype: 'float16', _type: 'Array2D' }]));
    const fields = hooks.map((h) => array2dField(h, ctx, d, 'float16'));
    const cols = Object.fromEntries(hooks.map((h, k) => [h, [0, 1].map((w) =>
      Array.from({ length: ctx }, (_, p) => Array.from({ length: d }, (_, j) => w * 16 + p * 4 + j + 0.5 + 1000 * k)))]));
    writeShard(path.join(out, 'data-00000-of-00001.arrow'), fields, features, [cols]);
    writeFolder(out, ['data-00000-of-00001.arrow'], features);
  }
} else if (mode === 'read') {
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
  const shards = state._data_files.map(({ filename }) => {
    const table = tableFromIPC(fs.readFileSync(path.join(dir, filename)));
    const columns = {};
    for (const f of table.schema.fields) {
      const col = table.getChild(f.name);
      const rows = [];
      for (let i = 0; i < table.numRows; i++) {
        const v = col.get(i);
        rows.push(f.name === 'token_ids' ? Array.from(v, Number) : Array.from(v, (r) => Array.from(r, Number)));
      }
      columns[f.name] = rows;
    }
    return {
      filename,
      fields: table.schema.fields.map((f) => ({ name: f.name, type: String(f.type), nullable: f.nullable, metadata: Object.fromEntries(f.metadata) })),
      metadata: Object.fromEntries(table.schema.metadata),
      batch_rows: table.batches.map((b) => b.numRows),
      columns,
    };
  });
  const json = JSON.stringify({ reader: `apache-arrow ${arrowVersion}`, shards }, null, 1)
    .replace(/\[\s+([-\d.e,\s]+?)\s+\]/g, (_, inner) => `[${inner.replace(/\s+/g, '')}]`);
  process.stdout.write(json + '\n');
} else {
  process.stderr.write('usage: saelens_cache_arrow_js.mjs write|read DIR\n');
  process.exit(2);
}
