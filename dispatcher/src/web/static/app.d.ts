/** app.js is the page's browser script; the dispatcher imports it as text (see ../assets.ts). */
declare const text: string;
export default text;
