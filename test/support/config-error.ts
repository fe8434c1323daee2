// The one-line message of the ConfigError a call throws (fails the test if it throws none).
import * as assert from 'uvu/assert';
import { ConfigError } from '../../src/config/load.js';

export function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.instance(err, ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}
