// The dtl extension's entry point. Highlighting needs none of this: it comes
// from package.json's grammar contribution. Here we only start the language
// server, `dtl lsp` over stdio, when a `dtl` executable is on PATH; without
// one the extension stays a highlighter and shows no error, since most users
// of the grammar will not have the CLI installed.
'use strict';

const fs = require('fs');
const path = require('path');

let client;

/** The full path of an executable called `name` on PATH, or undefined. */
function findOnPath(name) {
  const suffixes = process.platform === 'win32'
    ? (process.env.PATHEXT || '.EXE;.CMD;.BAT').split(';')
    : [''];
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    for (const suffix of suffixes) {
      const candidate = path.join(dir, name + suffix);
      try {
        fs.accessSync(candidate, fs.constants.X_OK);
        if (fs.statSync(candidate).isFile()) return candidate;
      } catch {
        // Not in this directory.
      }
    }
  }
  return undefined;
}

function activate() {
  const command = findOnPath('dtl');
  if (!command) return;

  let languageclient;
  try {
    languageclient = require('vscode-languageclient/node');
  } catch {
    // Installed from the folder without `npm install`: highlight only.
    console.warn(`dtl: found ${command}, but vscode-languageclient is not installed; `
      + 'run `npm install` in the extension folder to use the language server');
    return;
  }

  const serverOptions = { command, args: ['lsp'], transport: languageclient.TransportKind.stdio };
  const clientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'dtl' },
      { scheme: 'untitled', language: 'dtl' },
    ],
  };
  client = new languageclient.LanguageClient('dtl', 'dtl language server', serverOptions, clientOptions);
  client.start().catch((error) => console.warn(`dtl: the language server did not start: ${error}`));
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
