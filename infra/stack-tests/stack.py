"""template.yaml as CloudFormation sees it, for the policy and deploy tests.

The SAM template is translated offline by aws-sam-translator (the library the
AWS::Serverless transform runs), so the tests read the very roles, policies and
resources a deploy would create. Intrinsic functions are reduced to *symbols*
(`{"Fn::GetAtt": ["AppKey", "Arn"]}` -> `AppKey`), which is what the allowlist
in policy-allowlist.json is written in.
"""

import copy
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(os.environ.get("TEMPLATE", ROOT / "template.yaml"))
ALLOWLIST = Path(__file__).resolve().parent / "policy-allowlist.json"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"

# Where the translated functions' code is said to live. `sam deploy` uploads
# the build and puts its S3 location here; the translator only accepts S3 URIs.
CODE_BUCKET = "tokenkeep-stack-test-code"
CODE_KEY = "bootstrap.zip"

TABLE_START = "<!-- policy-table:start (generated from infra/stack-tests/policy-allowlist.json; checked by infra/stack-tests/test_policy.py) -->"
TABLE_END = "<!-- policy-table:end -->"

_translated = None


def translate():
    """The translated template (a dict), translated once per process."""
    global _translated
    if _translated is None:
        # The translator derives the partition from the SDK's region.
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        from samtranslator.translator.transform import transform
        from samtranslator.yaml_helper import yaml_parse

        sam = yaml_parse(TEMPLATE.read_text())
        for resource in sam["Resources"].values():
            if resource["Type"] == "AWS::Serverless::Function":
                resource["Properties"]["CodeUri"] = f"s3://{CODE_BUCKET}/{CODE_KEY}"

        class NoManagedPolicyNames:
            # The template names managed policies by ARN only; a name would need
            # a lookup in IAM, which an offline translation can't do.
            def load(self):
                return {}

        _translated = transform(sam, {}, NoManagedPolicyNames())
    return copy.deepcopy(_translated)


def load_allowlist():
    return json.loads(ALLOWLIST.read_text())


def resources_of_type(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def symbol(value):
    """A CloudFormation value reduced to a readable, comparable string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return arg
        if fn == "Fn::GetAtt":
            return arg[0] if arg[1] == "Arn" else f"{arg[0]}.{arg[1]}"
        if fn == "Fn::Sub" and isinstance(arg, str):
            return arg
        if fn == "Fn::If":
            return f"If({arg[0]}: {symbol(arg[1])} | {symbol(arg[2])})"
    raise AssertionError(f"no symbol for {json.dumps(value)}")


def symbolize(tree):
    """`symbol` applied to every leaf of a condition block."""
    if isinstance(tree, dict):
        try:
            return symbol(tree)
        except AssertionError:
            return {k: symbolize(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [symbolize(v) for v in tree]
    return tree


def as_list(value):
    return value if isinstance(value, list) else [value]


def role_of(template, function_id):
    role = template["Resources"][function_id]["Properties"]["Role"]
    assert "Fn::GetAtt" in role, f"{function_id}: role must be the stack's own, got {role}"
    role_id = role["Fn::GetAtt"][0]
    return role_id, template["Resources"][role_id]


def statements(role):
    """(statement, condition name or None) for each inline statement; a
    statement wrapped in Fn::If exists only when that condition holds."""
    out = []
    for policy in role["Properties"].get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            if isinstance(st, dict) and "Fn::If" in st:
                cond, then, otherwise = st["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}, "a conditional statement's else must be AWS::NoValue"
                out.append((then, cond))
            else:
                out.append((st, None))
    return out


def grant(statement, only_if):
    """One statement in the allowlist's shape."""
    g = {
        "sid": statement.get("Sid"),
        "effect": statement["Effect"],
        "actions": sorted(as_list(statement["Action"])),
        "resources": sorted(symbol(r) for r in as_list(statement.get("Resource", []))),
    }
    if "Condition" in statement:
        g["condition"] = symbolize(statement["Condition"])
    if only_if:
        g["only_if"] = only_if
    return g


def grants_of(template, function_id):
    _, role = role_of(template, function_id)
    return [grant(st, cond) for st, cond in statements(role)]


def env_of(template, function_id):
    return template["Resources"][function_id]["Properties"].get("Environment", {}).get("Variables", {})


# ---- the table in docs/DEPLOY.md ------------------------------------------------

def _describe(g, aliases):
    resources = ", ".join(aliases.get(r, r) for r in g["resources"])
    text = f"{g['says']}: `{'`, `'.join(g['actions'])}` on {resources}"
    cond = g.get("condition", {})
    notes = []
    for test, keys in cond.items():
        for key, value in keys.items():
            shown = ", ".join(f"`{v}`" for v in as_list(value))
            notes.append(f"{key} {shown}")
    if notes:
        text += " (" + "; ".join(notes) + ")"
    if g.get("only_if"):
        text += f", only while {g['only_if']}"
    return text


def policy_table(allowlist):
    """The Markdown table of what each function can and cannot do."""
    aliases = allowlist.get("aliases", {})
    rows = [TABLE_START, "", "| Function | Can | Cannot |", "|---|---|---|"]
    for fid, entry in allowlist["functions"].items():
        can = [_describe(g, aliases) for g in entry["grants"]]
        can.append(f"{entry['managed_policy_says']}: {', '.join(entry['managed_policies'])}")
        cannot = [c["says"] for c in entry["cannot"]]
        rows.append(f"| {fid} (`{entry['binary']}`) | {'<br>'.join(can)} | {'<br>'.join(cannot)} |")
    rows += ["", TABLE_END]
    return "\n".join(rows)
