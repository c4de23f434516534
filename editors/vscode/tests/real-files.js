// Tokenizes real, valid dtl files with the extension's grammar and fails on
// what a valid file should never show: text that no rule scoped, a keyword
// out of place, an `invalid.*` scope, or a region left open at the end of the
// file (one mis-scoped brace colours everything after it).
//
// Usage: node tests/real-files.js TOOLS_DIR FILE...
// TOOLS_DIR holds the node_modules that test.sh installed; vscode-textmate and
// vscode-oniguruma are resolved from vscode-tmgrammar-test's own dependencies.
'use strict';
const fs = require('fs');
const path = require('path');

const [toolsDir, ...files] = process.argv.slice(2);
const from = { paths: [path.dirname(require.resolve('vscode-tmgrammar-test/package.json',
  { paths: [path.resolve(toolsDir)] }))] };
const tm = require(require.resolve('vscode-textmate', from));
const onig = require(require.resolve('vscode-oniguruma', from));

const grammarPath = path.join(__dirname, '..', 'syntaxes', 'dtl.tmLanguage.json');
const wasm = fs.readFileSync(require.resolve('vscode-oniguruma', from).replace(/main\.js$/, 'onig.wasm'));
const registry = new tm.Registry({
  onigLib: onig.loadWASM(wasm.buffer).then(() => ({
    createOnigScanner: (patterns) => new onig.OnigScanner(patterns),
    createOnigString: (s) => new onig.OnigString(s),
  })),
  loadGrammar: async () => tm.parseRawGrammar(fs.readFileSync(grammarPath, 'utf8'), grammarPath),
});

// A scope that says what a token is, as opposed to where it sits.
const telling = (scope) => scope !== 'source.dtl' && !scope.startsWith('meta.');

registry.loadGrammar('source.dtl').then((grammar) => {
  const problems = [];
  for (const file of files) {
    let stack = tm.INITIAL;
    fs.readFileSync(file, 'utf8').split(/\r?\n/).forEach((line, i) => {
      const result = grammar.tokenizeLine(line, stack);
      stack = result.ruleStack;
      for (const token of result.tokens) {
        const text = line.substring(token.startIndex, token.endIndex);
        const where = `${file}:${i + 1}:${token.startIndex + 1}: ${JSON.stringify(text)}`;
        const bad = token.scopes.find((s) => s === 'keyword.other.dtl' || s.startsWith('invalid.'));
        if (bad) problems.push(`${where} is scoped ${bad}`);
        else if (text.trim() && !token.scopes.some(telling)) problems.push(`${where} has no scope`);
      }
    });
    if (stack.depth > 1) problems.push(`${file}: a region is still open at the end of the file`);
  }
  for (const p of problems) console.error(p);
  console.log(`real files: ${files.length} tokenized, ${problems.length} problems`);
  process.exit(problems.length ? 1 : 0);
});
