package workloadapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Source is what the server serves: the sidecar's rotating identity.
// certs.Source implements it.
type Source interface {
	// GetX509SVID returns the current X509-SVID.
	GetX509SVID() (*x509svid.SVID, error)
	// GetX509BundleForTrustDomain returns the trust bundle of td.
	GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error)
	// Updated returns a channel closed on the next change of the SVID or
	// the bundle (and then replaced by a fresh one).
	Updated() <-chan struct{}
}

// SecurityHeader is the metadata key every Workload API call must carry with
// the value "true" (SPIFFE Workload API spec).
const SecurityHeader = "workload.spiffe.io"

// maxSocketPath is the longest unix socket path Linux accepts (sun_path).
const maxSocketPath = 107

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) {
		if l != nil {
			s.log = l
		}
	}
}

// WithSocketMode sets the permission bits of the socket (default 0600, owner
// only). Wider modes let other users' processes fetch the SVID.
func WithSocketMode(m fs.FileMode) Option {
	return func(s *Server) { s.mode = m.Perm() }
}

// Server is a Workload API server on a unix socket.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	src  Source
	path string
	mode fs.FileMode
	log  *slog.Logger

	ln   net.Listener
	info fs.FileInfo // the socket file we created, to remove only our own
	grpc *grpc.Server

	closeOnce sync.Once
	closeErr  error
}

// Listen creates the socket at path (a stale socket file left there by a dead
// process is removed first; a live one, or any other kind of file, is an
// error) and returns the server, ready for Serve. The socket gets its mode
// before it appears at path, so there is no moment where others can connect.
func Listen(path string, src Source, opts ...Option) (*Server, error) {
	if src == nil {
		return nil, errors.New("workloadapi: nil source")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: socket path %q: %w", path, err)
	}
	s := &Server{src: src, path: abs, mode: 0o600, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	if len(abs) > maxSocketPath {
		return nil, fmt.Errorf("workloadapi: socket path %q is longer than %d bytes", abs, maxSocketPath)
	}
	if err := removeStale(abs); err != nil {
		return nil, err
	}
	ln, info, err := listenPrivate(abs, s.mode)
	if err != nil {
		return nil, err
	}
	s.ln, s.info = ln, info
	s.grpc = grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkHeader(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkHeader(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	workload.RegisterSpiffeWorkloadAPIServer(s.grpc, s)
	return s, nil
}

// removeStale removes a socket file nobody listens on. Anything else at path
// is left alone and reported.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("workloadapi: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("workloadapi: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return fmt.Errorf("workloadapi: socket %s is in use by another process", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("workloadapi: remove stale socket: %w", err)
	}
	return nil
}

// listenPrivate binds the socket inside a fresh 0700 directory next to path,
// sets its mode, then renames it to path.
func listenPrivate(path string, mode fs.FileMode) (net.Listener, fs.FileInfo, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".wl")
	if err != nil {
		return nil, nil, fmt.Errorf("workloadapi: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	if len(tmp) > maxSocketPath {
		return nil, nil, fmt.Errorf("workloadapi: socket directory %q is too deep for a unix socket", filepath.Dir(path))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("workloadapi: listen: %w", err)
	}
	ln.SetUnlinkOnClose(false) // the socket moves; Close removes it by its final name
	fail := func(err error) (net.Listener, fs.FileInfo, error) {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("workloadapi: chmod socket: %w", err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("workloadapi: move socket into place: %w", err))
	}
	info, err := os.Lstat(path)
	if err != nil {
		_ = ln.Close()
		return nil, nil, fmt.Errorf("workloadapi: %w", err)
	}
	return ln, info, nil
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(SecurityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "workloadapi: security header missing from request")
	}
	return nil
}

// Addr returns the socket address in the form go-spiffe and the
// SPIFFE_ENDPOINT_SOCKET variable use: "unix:///path".
func (s *Server) Addr() string { return "unix://" + s.path }

// Path returns the absolute path of the socket.
func (s *Server) Path() string { return s.path }

// Serve answers calls until ctx is done or Close is called, then closes the
// server. It returns nil on such a shutdown.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	err := s.grpc.Serve(s.ln)
	if ctx.Err() != nil {
		// grpc.Serve returns as soon as Close stopped it, before Close has
		// removed the socket: wait for it (sync.Once blocks until done), so
		// the socket is gone when Serve returns.
		_ = s.Close()
	}
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("workloadapi: serve: %w", err)
	}
	return nil
}

// Close ends all streams, closes the socket and removes its file (only if it
// is still the socket this server created). It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.grpc.Stop() // streams are endless: Stop, not GracefulStop
		_ = s.ln.Close()
		if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, s.info) {
			if err := os.Remove(s.path); err != nil {
				s.closeErr = fmt.Errorf("workloadapi: remove socket: %w", err)
			}
		}
	})
	return s.closeErr
}

// FetchX509SVID sends the SVID with its trust domain's bundle, then again at
// every change of the Source, until the client goes away.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	var last *workload.X509SVIDResponse
	return s.watch(stream.Context(), func() error {
		resp, err := s.x509SVIDResponse()
		if err != nil {
			return err
		}
		if last != nil && sameSVIDResponse(last, resp) {
			return nil
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		last = resp
		return nil
	})
}

// FetchX509Bundles sends the trust bundle, then again at every change.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	var last []byte
	return s.watch(stream.Context(), func() error {
		td, raw, err := s.bundle()
		if err != nil {
			return err
		}
		if last != nil && bytes.Equal(last, raw) {
			return nil
		}
		if err := stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{td.IDString(): raw}}); err != nil {
			return err
		}
		last = raw
		return nil
	})
}

// watch calls send now and after every update until ctx ends or send fails.
func (s *Server) watch(ctx context.Context, send func() error) error {
	var prev <-chan struct{}
	for {
		ch := s.src.Updated() // before reading, so no change is missed
		if ch == prev {       // a closed channel that is never replaced: the source is gone
			return status.Error(codes.Unavailable, "workloadapi: source closed")
		}
		prev = ch
		if err := send(); err != nil {
			if _, ok := status.FromError(err); ok {
				return err
			}
			return status.Errorf(codes.Unavailable, "workloadapi: %v", err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Server) x509SVIDResponse() (*workload.X509SVIDResponse, error) {
	svid, err := s.src.GetX509SVID()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "workloadapi: no X509-SVID: %v", err)
	}
	certs, key, err := svid.MarshalRaw()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "workloadapi: marshal X509-SVID: %v", err)
	}
	b, err := s.src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "workloadapi: no bundle: %v", err)
	}
	return &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId:    svid.ID.String(),
		X509Svid:    certs,
		X509SvidKey: key,
		Bundle:      rawBundle(b),
		Hint:        svid.Hint,
	}}}, nil
}

func (s *Server) bundle() (spiffeid.TrustDomain, []byte, error) {
	svid, err := s.src.GetX509SVID()
	if err != nil {
		return spiffeid.TrustDomain{}, nil, status.Errorf(codes.Unavailable, "workloadapi: no X509-SVID: %v", err)
	}
	td := svid.ID.TrustDomain()
	b, err := s.src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return td, nil, status.Errorf(codes.Unavailable, "workloadapi: no bundle: %v", err)
	}
	return td, rawBundle(b), nil
}

// rawBundle concatenates the DER of the bundle's roots, as the Workload API
// carries them.
func rawBundle(b *x509bundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw...)
	}
	return out
}

func sameSVIDResponse(a, b *workload.X509SVIDResponse) bool {
	x, y := a.GetSvids()[0], b.GetSvids()[0]
	return x.GetSpiffeId() == y.GetSpiffeId() && bytes.Equal(x.GetX509Svid(), y.GetX509Svid()) &&
		bytes.Equal(x.GetX509SvidKey(), y.GetX509SvidKey()) && bytes.Equal(x.GetBundle(), y.GetBundle())
}

// FetchJWTBundles sends an empty set once (meshd issues no JWT-SVIDs, so
// there are no JWT authorities) and keeps the stream open. Answering instead
// of Unimplemented lets go-spiffe's BundleSource, which waits for both X.509
// and JWT bundles, become ready.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if err := stream.Send(&workload.JWTBundlesResponse{}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}
