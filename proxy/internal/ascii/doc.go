// Package ascii compares HTTP protocol tokens ("chunked", "close",
// "trailers", "100-continue") the way the RFCs define them: ASCII letters
// fold, nothing else does (strings.EqualFold would also fold Unicode, so
// "\u212a" — the Kelvin sign — would equal "k").
package ascii
