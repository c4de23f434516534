#!/usr/bin/env bash
# Tests the TextMate grammar with a real TextMate engine (vscode-textmate, the
# one VS Code uses), through vscode-tmgrammar-test:
#   1. tests/*.test.dtl: annotated samples, each `^^^` line asserts the scopes
#      of the characters above it;
#   2. tests/real-files.js: every example and every valid case of the compiler's
#      corpus tokenizes with no unscoped text and no region left open.
# The tool is installed once, pinned, into .test-tools/ (git-ignored). Not into
# ./node_modules: npm would then install the extension's own dependencies too.
set -euo pipefail
cd "$(dirname "$0")"

version=0.1.3
tools=.test-tools
bin="$tools/node_modules/.bin/vscode-tmgrammar-test"
installed="$tools/node_modules/vscode-tmgrammar-test/package.json"

if [ ! -x "$bin" ] || ! grep -q "\"version\": \"$version\"" "$installed" 2>/dev/null; then
  npm install --prefix "$tools" --no-save --no-package-lock --no-audit --no-fund \
    --loglevel=error "vscode-tmgrammar-test@$version"
fi

# The grammar comes from package.json (contributes.grammars), which tests that
# wiring too.
"$bin" --config package.json 'tests/*.test.dtl'

assertions=$(grep -cE '^//[[:space:]]*(\^|<~*-)' tests/*.test.dtl | awk -F: '{ n += $2 } END { print n }')
files=$(ls tests/*.test.dtl | wc -l)
echo "grammar: $assertions assertion lines in $files files passed"

node tests/real-files.js "$tools" ../../examples/*.dtl ../../examples/zoo/*.dtl ../../tests/cases/ok/*.dtl
