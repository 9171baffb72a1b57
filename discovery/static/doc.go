// Package static is the discovery backend for a fixed list of apps and
// addresses kept in a YAML file (--resolver static --resolver-config FILE):
//
//	apps:
//	  - appId: orders
//	    namespace: default          # optional, default "default"
//	    addresses: ["127.0.0.1:50012", "127.0.0.1:50022"]   # internal (mTLS) ports of its sidecars
//
// The file is validated strictly (see Parse) and reloaded when it changes.
// A bad file never replaces a good one: it is logged, reported to the
// Updater, and the last good set stays in force. Importing the package
// registers the backend under the name "static".
package static
