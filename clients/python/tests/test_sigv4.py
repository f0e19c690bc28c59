"""The AWS path of the client: SigV4 headers from botocore for execute-api,
signed per request; no network. The keys are placeholders, not credentials."""

import os
import unittest
from unittest import mock

from tokenkeep_bolt import TokenkeepClient


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


if __name__ == "__main__":
    unittest.main()
