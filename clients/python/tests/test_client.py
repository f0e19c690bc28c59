"""The client on its own: SigV4 headers from botocore for execute-api (no
network; the keys are placeholders, not credentials), and the retry rule
against a local HTTP server: a 503 is retried a bounded number of times, a 4xx
never."""

import http.server
import json
import os
import threading
import unittest
from unittest import mock

from tokenkeep_bolt import TokenkeepClient, TokenkeepError


class SigV4(unittest.TestCase):
    def test_requests_are_signed_for_execute_api_in_the_region(self):
        env = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "placeholder-secret", "AWS_SESSION_TOKEN": "placeholder-session"}
        with mock.patch.dict(os.environ, env):
            client = TokenkeepClient("https://abc123.execute-api.eu-west-1.amazonaws.com", aws_region="eu-west-1")
            url = "https://abc123.execute-api.eu-west-1.amazonaws.com/tokens/authorize"
            headers = client._headers("POST", url, b'{"body":""}')
        auth = headers["Authorization"]
        self.assertTrue(auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), auth)
        self.assertIn("/eu-west-1/execute-api/aws4_request", auth)
        self.assertIn("host", auth.split("SignedHeaders=")[1].split(",")[0])
        self.assertEqual(headers["X-Amz-Security-Token"], "placeholder-session")
        self.assertNotIn("placeholder-secret", repr(client) + str(headers))

    def test_a_client_needs_a_dev_key_or_a_region(self):
        with self.assertRaises(ValueError):
            TokenkeepClient("http://127.0.0.1:1")


class Retries(unittest.TestCase):
    def serve(self, statuses):
        calls = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                status = statuses[min(len(calls), len(statuses) - 1)]
                calls.append(status)
                body = json.dumps({"ok": status == 200, "error": "unavailable" if status != 200 else None}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.shutdown)
        return f"http://127.0.0.1:{server.server_address[1]}", calls

    def test_a_503_is_retried_then_succeeds(self):
        url, calls = self.serve([503, 200])
        TokenkeepClient(url, dev_key="k" * 64, max_attempts=3).store_installation({})
        self.assertEqual(calls, [503, 200])

    def test_retries_are_bounded(self):
        url, calls = self.serve([503])
        with self.assertRaises(TokenkeepError) as failed:
            TokenkeepClient(url, dev_key="k" * 64, max_attempts=3).store_installation({})
        self.assertEqual((failed.exception.status, len(calls)), (503, 3))

    def test_a_4xx_is_not_retried(self):
        url, calls = self.serve([400])
        with self.assertRaises(TokenkeepError):
            TokenkeepClient(url, dev_key="k" * 64, max_attempts=3).store_installation({})
        self.assertEqual(calls, [400])

    def test_an_unreachable_service_is_a_clear_error(self):
        with self.assertRaises(TokenkeepError) as failed:
            TokenkeepClient("http://127.0.0.1:9", dev_key="k" * 64, max_attempts=2, timeout=1).store_installation({})
        self.assertIn("unreachable", failed.exception.code)


if __name__ == "__main__":
    unittest.main()
