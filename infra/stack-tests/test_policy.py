"""Policy drift fails CI: every function's role, as the translated template
creates it, is exactly what policy-allowlist.json allows, holds to the rules
below, and docs/DEPLOY.md shows the same table.

This reads the template only. It proves what the policies *say*; whether AWS
enforces them as intended (LeadingKeys, encryption context, ViaService) is
AWS's IAM evaluation, which no local emulator performs.
"""

import re
import unittest

import stack

ENVELOPE_PURPOSE = "slack-installation"


def leading_keys(g):
    cond = g.get("condition", {})
    return cond.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")


def via_service(g):
    return g.get("condition", {}).get("StringEquals", {}).get("kms:ViaService")


def allows(g, action, resource):
    """Whether grant g's action pattern and resources cover (action, resource)."""
    def match(pattern, value):
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), value) is not None

    if not any(match(a, action) for a in g["actions"]):
        return False
    return resource == "*" or any(match(r, resource) for r in g["resources"])


class PolicyAllowlist(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = stack.translate()
        cls.allowlist = stack.load_allowlist()
        cls.functions = stack.resources_of_type(cls.template, "AWS::Lambda::Function")

    def test_every_function_has_exactly_one_allowlist_entry(self):
        # A function added to the template without an entry (or an entry left
        # behind after a function is removed) fails here, by name.
        self.assertEqual(sorted(self.functions), sorted(self.allowlist["functions"]))

    def test_each_role_is_exactly_its_allowlist(self):
        for fid, entry in self.allowlist["functions"].items():
            with self.subTest(function=fid):
                expected = [{k: v for k, v in g.items() if k != "says"} for g in entry["grants"]]
                actual = stack.grants_of(self.template, fid)
                key = lambda g: g["sid"] or ""
                self.assertEqual(sorted(actual, key=key), sorted(expected, key=key))
                _, role = stack.role_of(self.template, fid)
                self.assertEqual(role["Properties"].get("ManagedPolicyArns", []), entry["managed_policies"])
                self.assertEqual(
                    role["Properties"]["AssumeRolePolicyDocument"]["Statement"],
                    [{"Action": ["sts:AssumeRole"], "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}}],
                )

    def test_roles_have_no_wildcards_and_no_deny_surprises(self):
        for fid in self.functions:
            for g in stack.grants_of(self.template, fid):
                with self.subTest(function=fid, sid=g["sid"]):
                    self.assertEqual(g["effect"], "Allow")
                    self.assertTrue(g["sid"], "every statement has a Sid (the allowlist matches by it)")
                    for a in g["actions"]:
                        self.assertNotIn("*", a, "no wildcard actions")
                    self.assertTrue(g["resources"], "every statement names its resources")
                    for r in g["resources"]:
                        self.assertNotIn("*", r, "no wildcard resources")
                    self.assertNotIn("NotAction", g)
                    self.assertNotIn("NotResource", g)

    def test_kms_use_is_pinned_by_purpose_or_by_service(self):
        # A data key opens only with purpose=slack-installation in its context;
        # a key used on a function's behalf by another service (Secrets Manager
        # for a secret, SQS for a queue) only through that service, for one
        # resource of this stack (the allowlist's via_services).
        via_services = self.allowlist["via_services"]
        service_of = re.compile(r"^([a-z0-9-]+)\.\$\{AWS::Region\}\.amazonaws\.com$")
        resources = self.template["Resources"]
        for fid in self.functions:
            for g in stack.grants_of(self.template, fid):
                if not any(a.startswith("kms:") for a in g["actions"]):
                    continue
                with self.subTest(function=fid, sid=g["sid"]):
                    self.assertTrue(all(a.startswith("kms:") for a in g["actions"]), "KMS actions in their own statement")
                    self.assertLessEqual(set(g["actions"]), {"kms:Decrypt", "kms:GenerateDataKey"})
                    equals = g.get("condition", {}).get("StringEquals", {})
                    if via_service(g) is not None:
                        service = service_of.match(via_service(g))
                        self.assertIsNotNone(service, f"kms:ViaService {via_service(g)!r} names one service in this Region")
                        self.assertIn(service[1], via_services, "a service the allowlist knows")
                        pinned = equals.get(via_services[service[1]])
                        self.assertIn(pinned, resources, f"pinned by {via_services[service[1]]} to one resource of the stack")
                    else:
                        self.assertEqual(equals.get("kms:EncryptionContext:purpose"), ENVELOPE_PURPOSE)

    def test_what_each_function_cannot_do(self):
        for fid, entry in self.allowlist["functions"].items():
            grants = stack.grants_of(self.template, fid)
            for rule in entry["cannot"]:
                with self.subTest(function=fid, cannot=rule["says"]):
                    for g in grants:
                        if via_service(g) is not None:
                            continue  # usable only through that service, for that secret
                        keys = leading_keys(g)
                        if "unless_leading_keys" in rule and keys and set(keys) <= set(rule["unless_leading_keys"]):
                            continue
                        for action in rule["actions"]:
                            for resource in rule["resources"]:
                                self.assertFalse(allows(g, action, resource), f"{g['sid']} grants {action} on {resource}")

    def test_secrets_in_the_environment_are_exactly_the_secrets_the_role_reads(self):
        # Config loads what the environment names; IAM allows what the role
        # reads. They must agree, or a function fails at cold start (named
        # secret it can't read) or holds a permission it never uses.
        arn_var_of = {}
        for fid, entry in self.allowlist["functions"].items():
            with self.subTest(function=fid):
                env = stack.env_of(self.template, fid)
                named = {k: stack.symbol(v) for k, v in env.items() if k.endswith("_SECRET_ARN")}
                self.assertEqual(sorted(named), entry["secrets"])
                readable = {
                    r for g in stack.grants_of(self.template, fid)
                    if "secretsmanager:GetSecretValue" in g["actions"] for r in g["resources"]
                }
                self.assertEqual(set(named.values()), readable)
                for var, secret in named.items():
                    self.assertEqual(arn_var_of.setdefault(var, secret), secret, "one variable, one secret")
                # The key the store seals with is the key the role may seal with.
                kms_key = stack.symbol(env["TOKENKEEP_KMS_KEY_ID"])
                # (SQS encrypting lazy work with the app key is the service's own use, pinned by kms:ViaService.)
                seal = [
                    g for g in stack.grants_of(self.template, fid)
                    if "kms:GenerateDataKey" in g["actions"] and via_service(g) is None
                ]
                for g in seal:
                    self.assertEqual(g["resources"], [kms_key])
        self.assertEqual(
            arn_var_of,
            {"TOKENKEEP_CLIENT_SECRET_ARN": "SlackClientSecret", "TOKENKEEP_SIGNING_SECRET_ARN": "SlackSigningSecret"},
        )

    def test_only_request_verifying_functions_hold_the_signing_secret(self):
        # The internet-facing OAuth function and the sweep never verify a Slack
        # request; with the signing secret they could forge one.
        holders = [f for f, e in self.allowlist["functions"].items() if "TOKENKEEP_SIGNING_SECRET_ARN" in e["secrets"]]
        self.assertEqual(sorted(holders), ["EventsFunction", "TokenServiceFunction"])

    def test_key_policy_opens_to_everyone_only_through_dynamodb_in_this_account(self):
        statements = self.template["Resources"]["AppKey"]["Properties"]["KeyPolicy"]["Statement"]
        for st in statements:
            with self.subTest(sid=st["Sid"]):
                principal = st["Principal"]
                if principal == {"AWS": "*"} or principal == "*":
                    equals = st["Condition"]["StringEquals"]
                    self.assertEqual(equals["kms:CallerAccount"], {"Ref": "AWS::AccountId"})
                    self.assertEqual(equals["kms:ViaService"], {"Fn::Sub": "dynamodb.${AWS::Region}.amazonaws.com"})
                if "Service" in principal:
                    self.assertIn("Condition", st, "a service principal is pinned by a condition")

    def test_the_deploy_doc_shows_this_table(self):
        doc = stack.DEPLOY_DOC.read_text()
        self.assertIn(stack.TABLE_START, doc)
        shown = doc[doc.index(stack.TABLE_START): doc.index(stack.TABLE_END) + len(stack.TABLE_END)]
        self.assertEqual(
            shown, stack.policy_table(self.allowlist),
            "docs/DEPLOY.md is out of date: python3 infra/stack-tests/policy_table.py --write",
        )


class Parameters(unittest.TestCase):
    """A deploy parameter outside its pattern is refused. CloudFormation
    matches AllowedPattern against the whole value; moto does not check it
    at all, so this test applies the patterns itself."""

    GOOD = {
        "SlackClientId": ["1234567890.1234567890"],
        "SlackScopes": ["app_mentions:read,chat:write", "app_mentions:read,chat:write,commands,incoming-webhook,users:read.email"],
        "SlackUserScopes": ["", "search:read"],
        "AlarmTopicArn": ["", "arn:aws:sns:eu-west-1:123456789012:tokenkeep-alarms"],
        "EnvelopeKeyArn": ["", "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"],
        "PreviousEnvelopeKeyArn": ["", "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"],
        "TokenServiceNamedTenantPrincipals": [
            "", "arn:aws:iam::123456789012:role/tokenkeep-worker",
            "arn:aws:iam::123456789012:role/a,arn:aws:sts::123456789012:assumed-role/b/session",
        ],
    }
    BAD = {
        "SlackClientId": ["", "abc", "1234567890", "1234567890.123\n", "1.2.3"],
        "SlackScopes": ["", "chat:write, commands", "chat:write,", "CHAT:WRITE"],
        "SlackUserScopes": ["search:read, ", ",search:read"],
        "AlarmTopicArn": ["arn:aws:sns:us-east-1:123:x", "https://sns.example", "arn:aws:sqs:us-east-1:123456789012:q"],
        "EnvelopeKeyArn": [
            "alias/tokenkeep", "arn:aws:kms:us-east-1:123456789012:alias/tokenkeep",
            "1234abcd-12ab-34cd-56ef-1234567890ab", "arn:aws:kms:us-east-1:123456789012:key/*",
        ],
        "PreviousEnvelopeKeyArn": ["arn:aws:kms:us-east-1:123456789012:alias/old", "old-key"],
        "TokenServiceNamedTenantPrincipals": [
            "*", "arn:aws:iam::123456789012:role/a, arn:aws:iam::123456789012:role/b", "worker", "arn:aws:iam::*:root",
        ],
    }

    @classmethod
    def setUpClass(cls):
        cls.params = stack.translate()["Parameters"]

    @staticmethod
    def accepted(spec, value):
        # No pattern accepts anything (test_every_parameter_has_a_pattern... names it).
        return re.fullmatch(spec.get("AllowedPattern", ".*"), value, re.DOTALL) is not None

    def test_every_parameter_has_a_pattern_and_a_sample(self):
        for name, spec in self.params.items():
            with self.subTest(parameter=name):
                self.assertIn("AllowedPattern", spec)
                self.assertIn("ConstraintDescription", spec)
                self.assertIn(name, self.GOOD)
                self.assertIn(name, self.BAD)
                if "Default" in spec:
                    self.assertTrue(self.accepted(spec, spec["Default"]), "the default passes its own pattern")

    def test_patterns_accept_good_and_refuse_bad_values(self):
        for name, spec in self.params.items():
            for value in self.GOOD[name]:
                with self.subTest(parameter=name, good=value):
                    self.assertTrue(self.accepted(spec, value))
            for value in self.BAD[name]:
                with self.subTest(parameter=name, bad=value):
                    self.assertFalse(self.accepted(spec, value))


if __name__ == "__main__":
    unittest.main()
