//! The browser client, embedded in the crate so that a server can serve it (see
//! [`ServerBuilder::serve_client`](crate::ServerBuilder::serve_client)) and so that other HTTP
//! stacks can serve the very same bytes.

/// The wsu browser client: a dependency-free ES module (`wsu/js/wsu.js`).
///
/// Serve it with [`ServerBuilder::serve_client`](crate::ServerBuilder::serve_client), or from any
/// HTTP server with the content type `text/javascript; charset=utf-8`; a page then imports it with
/// `<script type="module">import { connect } from '/wsu.js';</script>`. The file also works when
/// copied into a web site as is. Its API is documented in [`BROWSER_CLIENT_DTS`].
///
/// ```
/// assert!(wsu::BROWSER_CLIENT_JS.contains("export function connect("));
/// ```
pub const BROWSER_CLIENT_JS: &str = include_str!("../js/wsu.js");

/// TypeScript declarations of [`BROWSER_CLIENT_JS`] (`wsu/js/wsu.d.ts`), with its documentation
/// (JSDoc): options, reconnection and offline buffer policies, state events, errors.
///
/// ```
/// assert!(wsu::BROWSER_CLIENT_DTS.contains("export function connect("));
/// ```
pub const BROWSER_CLIENT_DTS: &str = include_str!("../js/wsu.d.ts");
