// Package svidfiles keeps a workload's rotating X509-SVID and trust bundle
// on disk as PEM files, for clients that read their credentials from files:
// grpc-go's file_watcher certificate provider, which a proxyless gRPC client
// names in its xDS bootstrap, and anything else that wants a certificate,
// key and CA file.
//
// In a directory it writes
//
//	svid.pem                 the certificate chain, leaf first (0644)
//	svid-key.pem             the leaf's private key, PKCS#8 (0600)
//	bundle.pem               the trust bundle's root certificates (0644)
//	spiffe-bundle-map.json   the same roots as a SPIFFE trust bundle map (0644)
//
// each by writing a temporary file in the same directory and renaming it
// over the old one, so a reader never sees a partial file. Run rewrites them
// after every rotation of the SVID and every change of the bundle (it
// follows a certs.Source), bundle first, so that while the files change the
// roots on disk already trust the new certificate. A reader that catches the
// key of one rotation with the certificate of another gets a mismatched pair
// (grpc-go's file_watcher then keeps its last good pair and reads again at
// its next refresh); the old pair stays valid for half its lifetime after a
// rotation.
package svidfiles
