// An independent Arrow implementation (the npm package apache-arrow, JavaScript) on both sides of SaeSharp's
// save_to_disk support; regenerates the fixtures in tests/data/pretokenize (see tests/data/README.md).
//
//   mkdir /tmp/arrowjs && cd /tmp/arrowjs && npm install apache-arrow@21.2.0
//   NODE_PATH=/tmp/arrowjs/node_modules node \
//       bench/reference/pretokenize_arrow_js.mjs read tests/data/pretokenize/saesharp_written > tests/data/pretokenize/saesharp_written.js.json
//   NODE_PATH=... node bench/reference/pretokenize_arrow_js.mjs write tests/data/pretokenize/js_written
//
// read FOLDER: reads a save_to_disk folder's state.json, then each Arrow IPC stream it lists with apache-arrow's
//   tableFromIPC, and prints the schema (field names, types, nullability, metadata), the record batch sizes and the rows.
// write FOLDER: writes a save_to_disk-style folder by hand from the format (datasets' arrow_dataset.py save_to_disk):
//   two stream shards data-0000{0,1}-of-00002.arrow with an input_ids list<int64> column (int64, where datasets
//   writes int32, to cover the other id width), state.json, dataset_info.json and a sae_lens.json of context size 4.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const searchPaths = (process.env.NODE_PATH || '').split(':').filter(Boolean);
const arrow = require(require.resolve('apache-arrow', { paths: searchPaths }));
const arrowVersion = JSON.parse(fs.readFileSync(
  path.join(searchPaths.map((p) => path.join(p, 'apache-arrow')).find((p) => fs.existsSync(p)) || '.', 'package.json'), 'utf8')).version;
const { tableFromIPC, tableToIPC, vectorFromArray, List, Field, Int64, Schema, Table } = arrow;

const [mode, dir] = process.argv.slice(2);
if (mode === 'read') {
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
  const shards = state._data_files.map(({ filename }) => {
    const table = tableFromIPC(fs.readFileSync(path.join(dir, filename)));
    const ids = table.getChild('input_ids');
    const rows = [];
    for (let i = 0; i < table.numRows; i++) rows.push(Array.from(ids.get(i), Number));
    return {
      filename,
      fields: table.schema.fields.map((f) => ({ name: f.name, type: String(f.type), nullable: f.nullable })),
      metadata: Object.fromEntries(table.schema.metadata),
      batch_rows: table.batches.map((b) => b.numRows),
      rows,
    };
  });
  // one line per row
  const json = JSON.stringify({ reader: `apache-arrow ${arrowVersion}`, shards }, null, 1)
    .replace(/\[\s+([-\d,\s]+?)\s+\]/g, (_, inner) => `[${inner.replace(/\s+/g, '')}]`);
  process.stdout.write(json + '\n');
} else if (mode === 'write') {
  fs.mkdirSync(dir, { recursive: true });
  const shardRows = [
    [[7, 1, 2, 3], [7, 4, 5, 7]],
    [[7, 6, 8, 9], [7, 10, 11, 12], [7, 13, 14, 15]],
  ];
  const features = { input_ids: { feature: { dtype: 'int64', _type: 'Value' }, _type: 'List' } };
  const type = new List(new Field('item', new Int64(), true));
  shardRows.forEach((rows, i) => {
    const vec = vectorFromArray(rows.map((r) => r.map(BigInt)), type);
    const plain = new Table({ input_ids: vec });
    const schema = new Schema(plain.schema.fields, new Map([['huggingface', JSON.stringify({ info: { features } })]]));
    const table = new Table(schema, plain.batches.map((b) => new arrow.RecordBatch(schema, b.data)));
    fs.writeFileSync(path.join(dir, `data-0000${i}-of-00002.arrow`), tableToIPC(table, 'stream'));
  });
  const state = {
    _data_files: [{ filename: 'data-00000-of-00002.arrow' }, { filename: 'data-00001-of-00002.arrow' }],
    _fingerprint: '0123456789abcdef', _format_columns: ['input_ids'], _format_kwargs: {}, _format_type: 'torch',
    _output_all_columns: false, _split: 'train',
  };
  fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify(state, null, 2));
  fs.writeFileSync(path.join(dir, 'dataset_info.json'), JSON.stringify({ citation: '', description: '', features, homepage: '', license: '' }, null, 2));
  fs.writeFileSync(path.join(dir, 'sae_lens.json'), JSON.stringify({
    sae_lens_version: '6.37.6', tokenizer_name: 'hand-written', original_dataset: 'none', original_dataset_name: null,
    original_split: 'train', original_data_files: null, original_column_name: 'text', context_size: 4, shuffled: false,
    seed: null, begin_batch_token: 7, begin_sequence_token: null, sequence_separator_token: 7, disable_concat_sequences: false,
  }, null, 2));
} else {
  process.stderr.write('usage: pretokenize_arrow_js.mjs read|write FOLDER\n');
  process.exit(2);
}
