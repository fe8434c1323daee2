// Prints the JSON Schema for proxy.config.json. Regenerate the shipped file with:
//   node --import tsx src/config/write-schema.ts > proxy.config.schema.json
// (test/unit/config.test.ts fails when the file is stale.)
import { configJsonSchema } from './schema.js';

console.log(JSON.stringify(configJsonSchema(), null, 2));
