"""A WSGI app on Python's wsgiref, as a Python service behind meshd runs.

It answers every request with JSON: the request line it got, PATH_INFO,
the path a servlet container (Tomcat, Jetty, Spring) would serve for it
(";params" stripped from every segment, then "." and ".." resolved), and
every HTTP_DAPR_* and HTTP_MESHD_* variable of the WSGI environ (wsgiref,
like CGI and Rack, folds "_" and "-" of a header name into the same
variable). It counts the requests it served at GET /__hits (not through
the mesh). Usage: wsgiapp.py PORT
"""
import json
import sys
import threading
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

hits = 0
lock = threading.Lock()


def servlet_view(path):
    out = []
    for seg in path.split("/")[1:]:
        seg = unquote(seg.split(";", 1)[0])
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def app(environ, start_response):
    global hits
    raw = environ.get("PATH_INFO", "")
    if raw == "/__hits":
        with lock:
            body = json.dumps({"hits": hits}).encode()
    else:
        with lock:
            hits += 1
        # wsgiref decodes PATH_INFO as latin-1 after percent-decoding; the
        # request line as sent is in REQUEST_URI-like form below.
        body = json.dumps({
            "path_info": raw,
            "request_uri": environ.get("REQUEST_URI", ""),
            "servlet_path": servlet_view(environ.get("RAW_PATH", raw)),
            "env": {k: v for k, v in environ.items()
                    if k.startswith("HTTP_DAPR_") or k.startswith("HTTP_MESHD_")},
        }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class Handler(WSGIRequestHandler):
    def get_environ(self):
        env = super().get_environ()
        # The undecoded path of the request line, as a servlet container
        # sees it before its own decoding.
        env["RAW_PATH"] = self.path.split("?", 1)[0]
        env["REQUEST_URI"] = self.path
        return env

    def log_message(self, *args):
        pass


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


if __name__ == "__main__":
    srv = make_server("127.0.0.1", int(sys.argv[1]), app, server_class=Server, handler_class=Handler)
    print("listening", flush=True)
    srv.serve_forever()
