/** Moved to api/sse.ts (the API's stream framing, which dispatcherctl imports); kept for the tests that import it here. */
export { formatSse, MAX_SSE_LINE, SseParser, type SseMessage } from '../api/sse.js';
