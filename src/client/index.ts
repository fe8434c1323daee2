// `tessera/client`: what application code imports.
export {
  authentToken,
  escapeOption,
  SessionCredentials,
  PARAM_SESSION_ID,
  PARAM_NONCE,
  PARAM_AUTHENT_TOKEN,
  type NextCredentials,
} from './token.js';
