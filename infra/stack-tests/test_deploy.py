"""The deploy is exercised: the translated template is created as a stack on
moto's CloudFormation (its own moto server on a free loopback port, as
infra/test.sh starts one), and the test reads back what was created.

What moto does and doesn't do, and where each part is checked instead:

- It creates the tables, the KMS key and alias, the roles, the functions, the
  log groups, the schedule and its target and permissions, and resolves Ref,
  GetAtt, Sub and If between them: checked here, against the AWS APIs.
- It has no CloudFormation support for AWS::SecretsManager::Secret, the HTTP
  API (AWS::ApiGatewayV2::*), alarms and EventInvokeConfig: it skips them, and
  a Ref to a skipped resource resolves to nothing. So this test creates the two
  secrets through the Secrets Manager API from the template's own properties
  and puts their ARNs where the template refers to them; the rest is checked on
  the translated template (test_skipped_and_ignored_parts_are_in_the_template).
- It ignores TTL, point-in-time recovery and the functions' architecture
  (checked on the template), stores the key policy so that DescribeKey fails
  (re-put as JSON text here before use), keeps role policies as Python text
  rather than JSON (parsed here), and leaves a false `!If` statement in a
  policy as null instead of dropping it (skipped here).
- It does not evaluate IAM: resources and conditions of DynamoDB, KMS and
  Secrets Manager permissions are not enforced. Nothing here claims that a
  role is *denied* anything at runtime; test_policy.py checks what the
  policies say.
"""

import ast
import io
import json
import re
import socket
import subprocess
import sys
import time
import unittest
import urllib.request
import zipfile
from pathlib import Path

import boto3

import stack

STACK = "tokenkeep-stack-test"
REGION = "us-east-1"
CLIENT_ID = "1234567890.1234567890"
PREVIOUS_KEY_STACK = "tokenkeep-rekey-test"

# What moto 5.2 has no CloudFormation support for; a new moto that creates one
# of these makes the test fail, so the check can move from the template to here.
NOT_CREATED_BY_MOTO = {
    "AWS::SecretsManager::Secret",
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Stage",
    "AWS::CloudWatch::Alarm",
    "AWS::Lambda::EventInvokeConfig",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_policy(document):
    """moto keeps inline role policies as str(dict); AWS returns JSON."""
    if isinstance(document, dict):
        return document
    try:
        return json.loads(document)
    except json.JSONDecodeError:
        return ast.literal_eval(document)


def normal(statement):
    """A statement with Action and Resource as sorted lists (AWS accepts both forms)."""
    return {k: sorted(stack.as_list(v)) if k in ("Action", "Resource") else v for k, v in statement.items()}


def by_sid(statements):
    return sorted(map(normal, statements), key=lambda s: s["Sid"])


def replace_refs(tree, arns):
    """Every {"Ref": X} with X in arns becomes the literal ARN."""
    if isinstance(tree, dict):
        if len(tree) == 1 and "Ref" in tree and tree["Ref"] in arns:
            return arns[tree["Ref"]]
        return {k: replace_refs(v, arns) for k, v in tree.items()}
    if isinstance(tree, list):
        return [replace_refs(v, arns) for v in tree]
    return tree


class MotoServer:
    def __init__(self, log_path):
        self.port = free_port()
        self.clients = {}
        self.endpoint = f"http://127.0.0.1:{self.port}"
        moto_server = Path(sys.executable).with_name("moto_server")
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT
        )
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited; see {log_path}")
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def client(self, service):
        # Making a client costs a good part of a second; keep one per service.
        if service not in self.clients:
            self.clients[service] = boto3.client(
                service, endpoint_url=self.endpoint, region_name=REGION,
                aws_access_key_id="test", aws_secret_access_key="test",
            )
        return self.clients[service]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Deploy:
    """One stack created from the translated template, and what it made."""

    def __init__(self, moto, template, name, parameters):
        self.moto = moto
        self.name = name
        self.template = template
        self.parameters = {k: v.get("Default", "") for k, v in template["Parameters"].items()} | parameters
        self.secrets = self.create_secrets(template)
        body = replace_refs(template, self.secrets)
        cf = moto.client("cloudformation")
        cf.create_stack(
            StackName=name, TemplateBody=json.dumps(body),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        for _ in range(300):
            self.stack = cf.describe_stacks(StackName=name)["Stacks"][0]
            if not self.stack["StackStatus"].endswith("_IN_PROGRESS"):
                break
            time.sleep(0.1)
        assert self.stack["StackStatus"] == "CREATE_COMPLETE", self.stack
        summaries = cf.list_stack_resources(StackName=name)["StackResourceSummaries"]
        self.physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries if r["LogicalResourceId"]}
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in self.stack.get("Outputs", [])}

    def create_secrets(self, template):
        """The template's secrets, made as the template says (moto's
        CloudFormation skips them); returns logical id -> ARN."""
        sm = self.moto.client("secretsmanager")
        arns = {}
        for logical, res in stack.resources_of_type(template, "AWS::SecretsManager::Secret").items():
            props = res["Properties"]
            if "SecretString" in props:
                value = props["SecretString"]
            else:
                gen = props["GenerateSecretString"]
                password = sm.get_random_password(
                    PasswordLength=gen["PasswordLength"], ExcludePunctuation=gen.get("ExcludePunctuation", False)
                )["RandomPassword"]
                value = json.dumps({**json.loads(gen["SecretStringTemplate"]), gen["GenerateStringKey"]: password})
            arns[logical] = sm.create_secret(Name=f"{self.name}-{logical}", SecretString=value)["ARN"]
        return arns

    def table_arn(self, logical):
        return f"arn:aws:dynamodb:{REGION}:123456789012:table/{self.physical[logical]}"

    def arn_of(self, logical):
        """GetAtt X.Arn for the resource types the stack has."""
        if logical in self.secrets:
            return self.secrets[logical]
        kind = self.template["Resources"][logical]["Type"]
        physical = self.physical[logical]
        if kind == "AWS::DynamoDB::Table":
            return self.table_arn(logical)
        if kind == "AWS::KMS::Key":
            return f"arn:aws:kms:{REGION}:123456789012:key/{physical}"
        if kind == "AWS::Lambda::Function":
            return f"arn:aws:lambda:{REGION}:123456789012:function:{physical}"
        if kind == "AWS::SQS::Queue":
            url = self.moto.client("sqs").get_queue_url(QueueName=physical.rsplit("/", 1)[-1])["QueueUrl"]
            return self.moto.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        raise AssertionError(f"no ARN rule for {kind} ({logical})")

    def ref_of(self, name):
        """Ref X: a parameter's value, a pseudo parameter, or what CloudFormation
        returns for the resource type (a table's name, a secret's ARN, ...)."""
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
                  "AWS::StackName": self.name, "AWS::URLSuffix": "amazonaws.com"}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.secrets:
            return self.secrets[name]
        return self.physical[name]

    def holds(self, condition):
        """The template's conditions are all `Not Equals [Ref P, '']`."""
        (equals,) = self.template["Conditions"][condition]["Fn::Not"]
        ref, empty = equals["Fn::Equals"]
        assert empty == "", condition
        return self.ref_of(ref["Ref"]) != ""

    def resolve(self, value):
        """A CloudFormation value as this stack resolves it, independently of
        moto: what the created resources should hold."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                return self.ref_of(arg)
            if fn == "Fn::GetAtt":
                assert arg[1] == "Arn", arg
                return self.arn_of(arg[0])
            if fn == "Fn::If":
                return self.resolve(arg[1] if self.holds(arg[0]) else arg[2])
            if fn == "Fn::Sub" and isinstance(arg, str):
                def sub(m):
                    name = m.group(1)
                    return self.arn_of(name[:-4]) if name.endswith(".Arn") else self.ref_of(name)
                return re.sub(r"\$\{([^}]+)\}", sub, arg)
        return {k: self.resolve(v) for k, v in value.items()}

    def expected_statements(self, function_logical):
        """The role's inline statements as AWS would hold them for this stack."""
        _, role = stack.role_of(self.template, function_logical)
        return [self.resolve(st) for st, cond in stack.statements(role) if cond is None or self.holds(cond)]

    def function(self, logical):
        return self.moto.client("lambda").get_function_configuration(FunctionName=self.physical[logical])

    def role_policy(self, function_logical):
        iam = self.moto.client("iam")
        role_name = self.physical[stack.role_of(stack.translate(), function_logical)[0]]
        names = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
        statements = []
        for n in names:
            doc = parse_policy(iam.get_role_policy(RoleName=role_name, PolicyName=n)["PolicyDocument"])
            # moto leaves an `!If [cond, statement, AWS::NoValue]` that is false
            # as None in the list; CloudFormation drops it.
            statements += [s for s in doc["Statement"] if s is not None]
        return iam.get_role(RoleName=role_name)["Role"], statements


MOTO = None


def setUpModule():
    global MOTO
    log_dir = stack.ROOT / "target"
    log_dir.mkdir(exist_ok=True)
    MOTO = MotoServer(log_dir / "moto-stack-tests.log")
    try:
        s3 = MOTO.client("s3")
        s3.create_bucket(Bucket=stack.CODE_BUCKET)
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("bootstrap", "#!/bin/sh\nexit 1\n")  # never invoked: moto needs some code to create a function
        s3.put_object(Bucket=stack.CODE_BUCKET, Key=stack.CODE_KEY, Body=code.getvalue())
    except Exception:
        MOTO.stop()
        raise


def tearDownModule():
    MOTO.stop()


class StackOnMoto(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.moto = MOTO
        cls.template = stack.translate()
        cls.allowlist = stack.load_allowlist()
        cls.deploy = Deploy(cls.moto, cls.template, STACK, {"SlackClientId": CLIENT_ID})
        cls.key_id = cls.deploy.physical["AppKey"]
        cls.key_arn = f"arn:aws:kms:{REGION}:123456789012:key/{cls.key_id}"

    # ---- what moto creates --------------------------------------------------

    def test_tables_keys_and_index(self):
        ddb = self.moto.client("dynamodb")
        inst = ddb.describe_table(TableName=self.deploy.physical["InstallationsTable"])["Table"]
        self.assertEqual(inst["KeySchema"], [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
        self.assertEqual(inst["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST")
        self.assertTrue(inst["DeletionProtectionEnabled"])
        (gsi,) = inst["GlobalSecondaryIndexes"]
        self.assertEqual(gsi["IndexName"], "by_expiry")
        self.assertEqual(
            gsi["KeySchema"],
            [{"AttributeName": "exp_shard", "KeyType": "HASH"}, {"AttributeName": "expires_at", "KeyType": "RANGE"}],
        )
        self.assertEqual(gsi["Projection"], {"ProjectionType": "KEYS_ONLY"})
        types = {a["AttributeName"]: a["AttributeType"] for a in inst["AttributeDefinitions"]}
        self.assertEqual(types, {"pk": "S", "sk": "S", "exp_shard": "S", "expires_at": "N"})
        audit = ddb.describe_table(TableName=self.deploy.physical["AuditTable"])["Table"]
        self.assertEqual(audit["KeySchema"], inst["KeySchema"])
        self.assertNotIn("GlobalSecondaryIndexes", {k for k, v in audit.items() if v})

    def test_kms_key_alias_and_a_data_key_under_the_purpose(self):
        kms = self.moto.client("kms")
        # moto keeps the CloudFormation key policy as a dict, which breaks
        # DescribeKey and GetKeyPolicy; put it back as JSON text first. The
        # policy's content is checked on the template (test_policy.py).
        policy = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Sid": "EnableIamPolicies", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "kms:*", "Resource": "*",
        }]})
        kms.put_key_policy(KeyId=self.key_id, PolicyName="default", Policy=policy)
        meta = kms.describe_key(KeyId=self.key_id)["KeyMetadata"]
        self.assertEqual(meta["Arn"], self.key_arn)
        self.assertEqual((meta["KeySpec"], meta["KeyUsage"], meta["KeyState"]), ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "Enabled"))
        self.assertEqual(meta["Description"], f"tokenkeep {STACK}: Slack installation data keys, table, secret and log encryption")
        self.assertTrue(kms.get_key_rotation_status(KeyId=self.key_id)["KeyRotationEnabled"])
        aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases(KeyId=self.key_id)["Aliases"]}
        self.assertEqual(aliases.get(f"alias/tokenkeep-{STACK}"), self.key_id)
        # The key does what the store asks of it: a data key under the envelope
        # context, which opens only with the same context.
        ctx = {"app_id": "A1", "tenant": "T#-#T1", "purpose": "slack-installation"}
        dk = kms.generate_data_key(KeyId=self.key_arn, KeySpec="AES_256", EncryptionContext=ctx)
        opened = kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)
        self.assertEqual(opened["Plaintext"], dk["Plaintext"])

    def test_roles_carry_resolved_arns_exactly_as_allowed(self):
        for fid in self.allowlist["functions"]:
            with self.subTest(function=fid):
                role, statements = self.deploy.role_policy(fid)
                role_id = stack.role_of(self.template, fid)[0]
                self.assertEqual(role["Arn"], f"arn:aws:iam::123456789012:role/{self.deploy.physical[role_id]}")
                self.assertEqual(self.deploy.function(fid)["Role"], role["Arn"])
                expected = self.deploy.expected_statements(fid)
                self.assertEqual(by_sid(statements), by_sid(expected))
                # Statements that exist only with a parameter set are absent here.
                allowed = sorted(g["sid"] for g in self.allowlist["functions"][fid]["grants"] if "only_if" not in g)
                self.assertEqual(sorted(s["Sid"] for s in statements), allowed)
                for st in statements:
                    for r in stack.as_list(st["Resource"]):
                        self.assertRegex(r, r"^arn:aws:[a-z]+:[a-z0-9-]*:[0-9]{12}:[^${}]+$", f"{st['Sid']}: unresolved")
                    self.assertNotIn("${", json.dumps(st.get("Condition", {})), f"{st['Sid']}: unresolved condition")

    def test_each_function_environment(self):
        d = self.deploy
        arn_var_of = {"TOKENKEEP_CLIENT_SECRET_ARN": "SlackClientSecret", "TOKENKEEP_SIGNING_SECRET_ARN": "SlackSigningSecret"}
        for fid, entry in self.allowlist["functions"].items():
            with self.subTest(function=fid):
                f = d.function(fid)
                env = f["Environment"]["Variables"]
                self.assertEqual(env, d.resolve(stack.env_of(self.template, fid)))
                # The settings every store needs, named concretely.
                self.assertEqual(env["SLACK_CLIENT_ID"], CLIENT_ID)
                self.assertEqual(env["TOKENKEEP_STORE"], "dynamodb")
                self.assertEqual(env["TOKENKEEP_TABLE"], d.physical["InstallationsTable"])
                self.assertEqual(env["TOKENKEEP_AUDIT_TABLE"], d.physical["AuditTable"])
                self.assertEqual(env["TOKENKEEP_KMS_KEY_ID"], self.key_arn)
                # Exactly the secrets the allowlist gives the function, as ARNs.
                named = {k: v for k, v in env.items() if k.endswith("_SECRET_ARN")}
                self.assertEqual(named, {var: d.secrets[arn_var_of[var]] for var in entry["secrets"]})
                props = self.template["Resources"][fid]["Properties"]
                self.assertEqual((f["Runtime"], f["Handler"]), ("provided.al2023", "bootstrap"))
                self.assertEqual((f["MemorySize"], f["Timeout"]), (props["MemorySize"], props["Timeout"]))

    def test_secrets_hold_what_the_runtime_expects(self):
        sm = self.moto.client("secretsmanager")
        client = json.loads(sm.get_secret_value(SecretId=self.deploy.secrets["SlackClientSecret"])["SecretString"])
        self.assertEqual(client, {"client_secret": ""}, "starts empty: the runtime refuses it at cold start")
        signing = json.loads(sm.get_secret_value(SecretId=self.deploy.secrets["SlackSigningSecret"])["SecretString"])
        self.assertEqual(list(signing), ["signing_secret"])
        self.assertRegex(signing["signing_secret"], r"^[A-Za-z0-9]{64}$")

    def test_schedule_invokes_the_rotation_function(self):
        ev = self.moto.client("events")
        rule_name = self.deploy.physical["RotationFunctionSweep"]
        rule = ev.describe_rule(Name=rule_name)
        self.assertEqual((rule["ScheduleExpression"], rule["State"]), ("rate(30 minutes)", "ENABLED"))
        rotation = self.deploy.function("RotationFunction")
        (target,) = ev.list_targets_by_rule(Rule=rule_name)["Targets"]
        self.assertEqual(target["Arn"], rotation["FunctionArn"])
        policy = json.loads(self.moto.client("lambda").get_policy(FunctionName=rotation["FunctionName"])["Policy"])
        (grant,) = policy["Statement"]
        self.assertEqual(grant["Principal"], {"Service": "events.amazonaws.com"})
        self.assertEqual(grant["Condition"]["ArnLike"]["AWS:SourceArn"], rule["Arn"])

    def test_outputs(self):
        d = self.deploy
        out = d.outputs
        self.assertEqual(out["TableName"], d.physical["InstallationsTable"])
        self.assertEqual(out["AuditTableName"], d.physical["AuditTable"])
        self.assertEqual(out["KeyArn"], self.key_arn)
        self.assertEqual(out["EnvelopeKeyInUse"], self.key_arn)
        self.assertEqual(out["ClientSecretArn"], d.secrets["SlackClientSecret"])
        self.assertEqual(out["SigningSecretArn"], d.secrets["SlackSigningSecret"])
        # The URLs name the HTTP API, which moto does not create: the ${HttpApi}
        # stays unresolved here, and the routes are checked on the template.
        for name, path in [("InstallUrl", "/slack/install"), ("OAuthRedirectUrl", "/slack/oauth_redirect"), ("EventsUrl", "/slack/events")]:
            self.assertTrue(out[name].endswith(f".execute-api.{REGION}.amazonaws.com{path}"), out[name])
        self.assertEqual(set(out), set(self.template["Outputs"]))

    def test_moto_skips_exactly_the_known_resource_types(self):
        skipped = {self.template["Resources"][k]["Type"] for k in set(self.template["Resources"]) - set(self.deploy.physical)}
        self.assertEqual(skipped, NOT_CREATED_BY_MOTO)

    # ---- what moto skips or ignores, on the translated template ---------------

    def test_skipped_and_ignored_parts_are_in_the_template(self):
        r = self.template["Resources"]
        # Secrets: encrypted with the app key; the client secret empty, the
        # signing secret random (never a guessable placeholder).
        for s in ("SlackClientSecret", "SlackSigningSecret"):
            self.assertEqual(r[s]["Properties"]["KmsKeyId"], {"Fn::GetAtt": ["AppKey", "Arn"]})
        self.assertEqual(r["SlackClientSecret"]["Properties"]["SecretString"], '{"client_secret":""}')
        gen = r["SlackSigningSecret"]["Properties"]["GenerateSecretString"]
        self.assertEqual((gen["GenerateStringKey"], gen["PasswordLength"]), ("signing_secret", 64))
        # HTTP API: exactly the three routes, each to its function.
        paths = r["HttpApi"]["Properties"]["Body"]["paths"]
        routes = {
            (method.upper(), path): op["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"].split("${")[-1].split(".Arn")[0]
            for path, ops in paths.items() for method, op in ops.items()
        }
        expected_routes = {
            tuple(route.split(" ", 1)): fid
            for fid, entry in self.allowlist["functions"].items() for route in entry.get("routes", [])
        }
        self.assertEqual(routes, expected_routes)
        self.assertEqual(expected_routes[("POST", "/slack/events")], "EventsFunction")
        stage = r["HttpApiApiGatewayDefaultStage"]["Properties"]
        self.assertEqual(stage["AccessLogSettings"]["DestinationArn"], {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]})
        self.assertNotIn("querystring", stage["AccessLogSettings"]["Format"].lower(), "OAuth code and state are never logged")
        # Alarms: the store's EMF metrics, without dimensions (an alarm with
        # dimensions would never match them), and each function's Errors.
        alarms = stack.resources_of_type(self.template, "AWS::CloudWatch::Alarm")
        metrics = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]): a["Properties"].get("Dimensions") for a in alarms.values()}
        for name in ("RefreshFailed", "DecryptFailed", "UnknownTenant"):
            self.assertIn(("tokenkeep", name), metrics)
            self.assertIsNone(metrics[("tokenkeep", name)])
        errors = sorted(a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in alarms.values() if a["Properties"]["MetricName"] == "Errors")
        self.assertEqual(errors, sorted(self.allowlist["functions"]))
        # Ignored by moto: TTL, point-in-time recovery, SSE with the app key, architecture.
        for t in ("InstallationsTable", "AuditTable"):
            p = r[t]["Properties"]
            self.assertEqual(p["TimeToLiveSpecification"], {"AttributeName": "ttl", "Enabled": True})
            self.assertEqual(p["PointInTimeRecoverySpecification"], {"PointInTimeRecoveryEnabled": True})
            self.assertEqual(p["SSESpecification"]["KMSMasterKeyId"], {"Fn::GetAtt": ["AppKey", "Arn"]})
        for fid in self.allowlist["functions"]:
            self.assertEqual(r[fid]["Properties"]["Architectures"], ["arm64"])
        retry = r["RotationFunctionEventInvokeConfig"]["Properties"]
        self.assertEqual((retry["MaximumRetryAttempts"], retry["MaximumEventAgeInSeconds"]), (1, 900))


class RekeyParametersOnMoto(unittest.TestCase):
    """During a rekey (docs/DEPLOY.md), the stack points the functions at the
    new key and lets the ones that open tokens decrypt under the old one."""

    @classmethod
    def setUpClass(cls):
        cls.moto = MOTO
        kms = cls.moto.client("kms")
        cls.new_key = kms.create_key(Description="new")["KeyMetadata"]["Arn"]
        cls.old_key = kms.create_key(Description="old")["KeyMetadata"]["Arn"]
        cls.deploy = Deploy(cls.moto, stack.translate(), PREVIOUS_KEY_STACK, {
            "SlackClientId": CLIENT_ID, "EnvelopeKeyArn": cls.new_key, "PreviousEnvelopeKeyArn": cls.old_key,
        })

    def test_functions_seal_with_the_new_key_and_open_under_both(self):
        allowlist = stack.load_allowlist()
        for fid, entry in allowlist["functions"].items():
            with self.subTest(function=fid):
                env = self.deploy.function(fid)["Environment"]["Variables"]
                self.assertEqual(env["TOKENKEEP_KMS_KEY_ID"], self.new_key)
                _, statements = self.deploy.role_policy(fid)
                self.assertEqual(by_sid(statements), by_sid(self.deploy.expected_statements(fid)))
                by_sid_ = {s["Sid"]: s for s in statements}
                self.assertEqual(sorted(by_sid_), sorted(g["sid"] for g in entry["grants"]))
                for sid in ("SealInstallations", "OpenAndSealInstallations"):
                    if sid in by_sid_:
                        self.assertEqual(by_sid_[sid]["Resource"], self.new_key)
                if "OpenInstallationsUnderPreviousKey" in by_sid_:
                    prev = by_sid_["OpenInstallationsUnderPreviousKey"]
                    self.assertEqual((prev["Action"], prev["Resource"]), ("kms:Decrypt", self.old_key))
                # No role may seal under the old key.
                for s in statements:
                    if s["Resource"] == self.old_key:
                        self.assertEqual(stack.as_list(s["Action"]), ["kms:Decrypt"])
        self.assertEqual(self.deploy.outputs["EnvelopeKeyInUse"], self.new_key)


if __name__ == "__main__":
    unittest.main()
