/** Static files imported as text (esbuild `with { type: 'text' }`; see assets.ts). */
declare module '*.html' {
  const text: string;
  export default text;
}
declare module '*.css' {
  const text: string;
  export default text;
}
