// Package route turns an app-facing request into the one (target, path)
// pair that the rest of meshd uses: it finds the target app in any of the
// Dapr forms, and normalizes the method path exactly once.
//
// Target forms, in order of precedence:
//
//  1. header `dapr-app-id: {app}[.{ns}]` on any path: the whole path is the method;
//  2. `/v1.0/invoke/{app}[.{ns}]/method/{method...}`;
//  3. an absolute-form proxy request `GET http://{app}[.{ns}]/path` (HTTP_PROXY mode).
//
// Normalize produces the canonical escaped form of a path. The same string is
// handed to the policy check and sent to the app (CVE-2026-41491 came from
// checking one form and dispatching another). The canonical form is:
//
//   - it starts with "/", holds no empty segment (no "//") except that a
//     trailing "/" is kept, and no "." or ".." segment ("." segments are
//     dropped, ".." removes the previous segment; ".." above the root is an
//     error, not clamped);
//   - every byte that RFC 3986 allows literally in a path (unreserved,
//     sub-delims, ":" and "@") appears literally, every other byte appears
//     as %XX with upper-case hex, so "/%61" and "/a" are the same path;
//   - rejected outright: NUL and control characters (raw or %-encoded),
//     "#" and "?" (a method cannot carry a fragment or query), backslashes
//     (raw or %5C), encoded slashes (%2F), encoded dots (%2E, the
//     encoded-traversal trick), malformed %-escapes, and a segment whose
//     part before its first ";" is "." or ".." ("..;", "..;jsessionid=x",
//     ".;", "..%3B"): servlet containers strip ";params" from each segment
//     and then resolve dot segments, so they would read "/public/..;/admin"
//     as "/admin" while the policy saw a path under "/public/". Other
//     ";params" are kept as they are (matrix parameters are legitimate).
//
// Normalize is idempotent (Normalize(Normalize(p)) == Normalize(p)) and does
// not allocate when its input is already canonical, which is the common
// case. The fuzz target FuzzNormalize checks those properties.
package route
