// Package ca holds sentry's certificate authority: the root and issuer
// (intermediate) key material, the data directory they live in, signing of
// workload certificates, the trust bundle and its publication, and root
// rotation.
//
// Data directory layout (directory mode 0700, keys 0600):
//
//	{data-dir}/state.json          generations, active one, bundle version
//	{data-dir}/bundle.pem          trust bundle: every root currently trusted
//	{data-dir}/ca/{NNNN}/          one generation: root.pem, root.key (optional),
//	                               issuer.pem (issuer, then intermediates), issuer.key
//	{data-dir}/staged/             a generation staged by `sentry rotate-root`,
//	                               picked up by the running sentry
//
// A root rotation runs in three steps, each persisted in state.json before it
// takes effect so a restart continues where it stopped:
//
//  1. publish: the staged generation's root is added to the bundle (file and
//     stream). Nothing is signed by it yet.
//  2. switch: after the propagation delay, workload certificates and sentry's
//     own serving certificate are signed by the new issuer. The old
//     generation gets a retire time: switch time + workload TTL + margin.
//  3. retire: at the retire time every certificate of the old generation has
//     expired; its root leaves the bundle and its keys are deleted.
//
// Signing never takes a lock: the active issuer is read through an atomic
// pointer, so no call fails or waits because of a rotation.
package ca
