"""A minimal Kubernetes API server, enough for Helm's `lookup` of Secrets: version, discovery and
GET of one Secret. Helm renders cluster-aware against it, so lookups see what the test stored."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DISCOVERY = {
    "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
             "verbs": ["get", "list", "create", "update", "delete"]},
        ],
    },
}


class FakeApiServer:
    def __init__(self):
        self.secrets = {}  # (namespace, name) -> Secret object
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                parts = path.strip("/").split("/")
                if path in DISCOVERY:
                    return self.reply(200, DISCOVERY[path])
                if len(parts) == 6 and parts[:2] == ["api", "v1"] and parts[2] == "namespaces" and parts[4] == "secrets":
                    secret = server.secrets.get((parts[3], parts[5]))
                    if secret:
                        return self.reply(200, secret)
                return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404, "message": f"{path} not found"})

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def store(self, secret):
        self.secrets[(secret["metadata"]["namespace"], secret["metadata"]["name"])] = secret

    def close(self):
        self.httpd.shutdown()
