"""Prints the per-function can/cannot table from policy-allowlist.json, or with
--write replaces it in docs/DEPLOY.md. Needs only python3; test_policy.py checks
that the doc and the allowlist agree, and the allowlist and the template."""

import sys

import stack


def main():
    table = stack.policy_table(stack.load_allowlist())
    if sys.argv[1:] != ["--write"]:
        print(table)
        return
    doc = stack.DEPLOY_DOC.read_text()
    start, end = doc.index(stack.TABLE_START), doc.index(stack.TABLE_END) + len(stack.TABLE_END)
    stack.DEPLOY_DOC.write_text(doc[:start] + table + doc[end:])


if __name__ == "__main__":
    main()
