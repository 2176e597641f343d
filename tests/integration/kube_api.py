#!/usr/bin/env python3
# kube_api.py -- a loopback HTTP server that answers the two Kubernetes API lists corral reads from files.
#
#   kube_api.py PORT DIR
#
# GET /api/v1/services answers DIR/services.json, GET /apis/discovery.k8s.io/v1/endpointslices answers
# DIR/endpointslices.json (recorded List bodies the test writes; see test_kube_source.c for where their
# shape comes from). A request must carry "Authorization: Bearer <DIR/token>" (re-read every request, so
# the test rotates it by rewriting the file); otherwise 401 with a v1 Status body, as the API server
# answers. Any other path is 404. One line per request on stdout: "<status> <path>". Binds 127.0.0.1 only.
# SPDX-License-Identifier: Apache-2.0
import http.server
import json
import os
import sys

PATHS = {"/api/v1/services": "services.json", "/apis/discovery.k8s.io/v1/endpointslices": "endpointslices.json"}


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print(status, self.path, flush=True)

    def do_GET(self):
        with open(os.path.join(DIR, "token")) as f:
            token = f.read().strip()
        path = self.path.split("?")[0]
        if self.headers.get("Authorization") != "Bearer " + token:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
            return self.answer(401, json.dumps(status))
        if path not in PATHS:
            return self.answer(404, '{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}')
        with open(os.path.join(DIR, PATHS[path])) as f:
            self.answer(200, f.read())

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    DIR = sys.argv[2]
    srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    srv.serve_forever()
