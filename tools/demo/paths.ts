/**
 * Where `pix-proxy demo` (and so `make demo`) keeps its state by default, relative to the working directory: the
 * token, the certificates, the simulator's log and the audit store (`audit/lake`, which a bare `pix-proxy audit
 * query` falls back to). A module of its own so that reading it loads nothing else.
 */
export const DEMO_DEFAULT_DIR = '.local/demo'
