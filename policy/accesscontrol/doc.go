// Package accesscontrol compiles a Dapr Configuration's spec.accessControl
// into a Go matcher and decides calls with it, following Dapr's documented
// precedence: the action of the matched operation and verb, else the calling
// app's defaultAction, else the global defaultAction.
//
// Beyond Dapr:
//   - appId, namespace and trustDomain of a policy may be globs ("*",
//     "team-*"); an exact appId+namespace match wins over a glob, globs are
//     tried in file order;
//   - spec.accessControl.mode: audit allows every call but reports those that
//     would have been denied;
//   - among operations, the most specific match wins (a literal segment over
//     an in-segment glob over "*" over "**"), with backtracking, instead of
//     Dapr's first-inserted-wins trie walk; entries with the same operation
//     name merge their verbs (the first action given for a verb wins).
//
// The matcher does not allocate for paths up to 256 bytes.
package accesscontrol
