-- A real client against `dtl lsp`: Neovim's built-in LSP client, headless.
-- Opens a file with a misspelt layer, then: waits for the diagnostic,
-- hovers a layer, completes inside `adamw(`, asks for inlay hints, fixes
-- the slip by editing, formats, renames a layer. Every failed check is
-- reported; the exit code says whether any failed.
--
--   DTL_BIN=target/debug/dtl DTL_SMOKE_DIR=$(mktemp -d) \
--     nvim --headless -u NONE -i NONE -n -c 'luafile editors/nvim/smoke.lua'
--
-- Written for Neovim 0.7 (Debian 12's), whose client has no inlay-hint
-- support of its own: those are asked for as a plain request.

local dtl = assert(os.getenv("DTL_BIN"), "DTL_BIN: the dtl binary")
local dir = assert(os.getenv("DTL_SMOKE_DIR"), "DTL_SMOKE_DIR: a scratch folder")
local failures, passed = {}, 0

local function check(ok, what)
  if ok then
    passed = passed + 1
  else
    table.insert(failures, what)
  end
end

local function finish()
  if #failures > 0 then
    io.stderr:write("neovim: " .. #failures .. " check(s) failed:\n  " .. table.concat(failures, "\n  ") .. "\n")
    vim.cmd("cquit 1")
  else
    io.stderr:write("neovim: all " .. passed .. " checks passed\n")
    vim.cmd("qall!")
  end
end

local text = [[
module Block(d: int) {
  fc = linear(d, d)
  forward(x: [B, d]) -> [B, d] {
    let h = x |> fc |> rleu
    h + x
  }
}
model Net {
  forward(x: [B, 64]) -> [B, 10] { x |> Block(64) |> linear(64, 10) }
}
data digits { source = synthetic(rows: 100, features: 64, classes: 10) }
train { model = Net; data = digits; loss = cross_entropy; optimizer = adamw(lr: 1e-3, ); steps = 1; micro_batch = 8 }
]]
local path = dir .. "/net.dtl"
local file = assert(io.open(path, "w"))
file:write(text)
file:close()

vim.cmd("edit " .. path)
local buf = vim.api.nvim_get_current_buf()
local client = vim.lsp.start_client({ name = "dtl", cmd = { dtl, "lsp" }, root_dir = dir })
check(client ~= nil, "the client started `dtl lsp`")
vim.lsp.buf_attach_client(buf, client)
local uri = vim.uri_from_bufnr(buf)

-- Line and column (from 0) of the first `needle` in the buffer.
local function find(needle)
  for i, line in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    local at = line:find(needle, 1, true)
    if at then
      return i - 1, at - 1
    end
  end
  return nil
end

local function at(needle, past)
  local line, col = find(needle)
  if not line then
    return nil
  end
  return { textDocument = { uri = uri }, position = { line = line, character = col + (past and #needle or 0) } }
end

local function request(method, params)
  if not params then
    return nil
  end
  local replies = vim.lsp.buf_request_sync(buf, method, params, 10000) or {}
  for _, reply in pairs(replies) do
    return reply.result, reply.error or reply.err
  end
end

local function errors()
  return vim.diagnostic.get(buf, { severity = vim.diagnostic.severity.ERROR })
end

-- 1. The diagnostic, with its fix in the message's help.
check(vim.wait(20000, function() return #errors() > 0 end, 50), "a diagnostic for `rleu` arrived")
local first = errors()[1]
check(first and first.message:find("unknown layer or module `rleu`", 1, true), "diagnostic: " .. vim.inspect(first))
check(first and first.message:find("did you mean `relu`?", 1, true), "the diagnostic suggests `relu`")

-- 2. Hover on a layer: its signature.
local hover = request("textDocument/hover", at("linear(64, 10)"))
local shown = hover and hover.contents and (hover.contents.value or "") or ""
check(shown:find("linear(in_features: int", 1, true), "hover on linear: " .. vim.inspect(hover))

-- 3. Completion inside `adamw(`: its arguments, less `lr`.
local items = request("textDocument/completion", at("adamw(lr: 1e-3, ", true))
items = items and (items.items or items) or {}
local labels = {}
for _, item in ipairs(items) do
  labels[item.label] = item.insertText or true
end
check(labels.weight_decay == "weight_decay: ", "completion in adamw( offers weight_decay: " .. vim.inspect(labels))
check(labels.lr == nil and labels.micro_batch == nil, "completion leaves out lr and the train keys")

-- 4. An edit fixes the slip: the diagnostics clear.
local line, col = find("rleu")
vim.api.nvim_buf_set_text(buf, line, col, line, col + 4, { "relu" })
check(vim.wait(20000, function() return #errors() == 0 end, 50), "the diagnostics cleared after the edit")

-- 5. Inlay hints, now that the file checks: the shape after a stage.
local hints = request("textDocument/inlayHint", {
  textDocument = { uri = uri },
  range = { start = { line = 0, character = 0 }, ["end"] = { line = 99, character = 0 } },
}) or {}
local hint_labels = {}
for _, hint in ipairs(hints) do
  hint_labels[hint.label] = true
end
check(hint_labels["‹[B, 10]›"], "an inlay hint gives linear(64, 10)'s shape: " .. vim.inspect(hint_labels))

-- 6. Formatting: the messy line comes back canonical, the rest untouched.
line = find("h + x")
vim.api.nvim_buf_set_lines(buf, line, line + 1, false, { "    h+x" })
local formatting = { textDocument = { uri = uri }, options = { tabSize = 2, insertSpaces = true } }
local edits = request("textDocument/formatting", formatting)
check(edits and #edits > 0 and edits[1].range.start.line == line, "formatting edits start at the messy line: " .. vim.inspect(edits))
if edits then
  vim.lsp.util.apply_text_edits(edits, buf, "utf-16")
end
check(find("    h + x") ~= nil, "formatting restored `h + x`")
local again = request("textDocument/formatting", formatting)
check(again and #again == 0, "a canonical buffer gets no edits: " .. vim.inspect(again))

-- 7. Rename a layer: its definition and its use, nothing else.
local rename = request("textDocument/rename", vim.tbl_extend("force", at("fc |>"), { newName = "proj" }))
check(rename and rename.changes, "rename gives a workspace edit: " .. vim.inspect(rename))
if rename then
  vim.lsp.util.apply_workspace_edit(rename, "utf-16")
end
check(find("proj = linear(d, d)") and find("x |> proj |> relu"), "the layer was renamed in both places")
check(find("fc") == nil, "no `fc` is left")

finish()
