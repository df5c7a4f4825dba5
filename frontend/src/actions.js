// What can be done to a whole document, from the list or the editor: rename,
// delete, download as .md/.txt, upload a text file as a new document.
import { ApiError, api, checkAccess, docPath, downloadText, fileName, h } from './common.js'
import { ask } from './dialog.js'

/** A sentence for a person out of a failed call. */
export function explain (err) {
  if (!(err instanceof ApiError)) return 'The server cannot be reached. Check your connection and try again.'
  switch (err.code) {
    case 'no_token': case 'token_required': return 'This server needs an access token.'
    case 'expired': case 'token_expired': return 'Your access token has expired: ask for a new link.'
    case 'bad_token': case 'token_invalid': return 'Your access token is not valid here.'
    case 'read_only': return 'Your access lets you read, not change documents.'
    case 'wrong_doc': case 'document_not_allowed': return 'Your access does not cover this document.'
    case 'name_taken': return 'A document with that name already exists.'
    case 'not_found': return 'That document no longer exists.'
  }
  if (err.status === 413) return 'That is larger than this server accepts.'
  return err.message || `The server answered ${err.status}.`
}

const checkName = (current) => (value) => {
  if (!value) return 'Give the document a name.'
  if (value.length > 512) return 'That name is too long (512 characters at most).'
  if (value === current) return 'That is its name already.'
  return null
}

/** Ask for a new name and rename; the new name, or null when cancelled. */
export function renameDocument (name, { before = () => {}, failed = () => {} } = {}) {
  return ask({
    title: 'Rename document',
    label: 'New name',
    value: name,
    confirm: 'Rename',
    check: checkName(name),
    submit: async (to) => {
      before()
      try {
        await api(docPath(name, '/rename'), {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ to })
        })
      } catch (err) {
        failed()
        throw new Error(explain(err))
      }
    }
  })
}

/** Ask, then delete; true when deleted. */
export async function deleteDocument (name, { before = () => {}, failed = () => {} } = {}) {
  const done = await ask({
    title: 'Delete this document?',
    body: [
      h('p', {}, h('strong', {}, name)),
      h('p', { class: 'muted' }, 'Everyone who has it open is disconnected and its text is removed from the server. ' +
        'This cannot be undone: download a copy first if you may need it.')
    ],
    confirm: 'Delete',
    danger: true,
    submit: async () => {
      before()
      try {
        await api(docPath(name), { method: 'DELETE' })
      } catch (err) {
        failed()
        throw new Error(explain(err))
      }
    }
  })
  return done === true
}

/**
 * Download the document as Markdown (`md`) or plain text (`txt`): from `text`
 * when the caller has it (the editor), else from the server.
 */
export async function downloadDocument (name, format, text = null) {
  const body = text ?? await api(docPath(name, `/text?root=text${format === 'md' ? '&format=md' : ''}`), { as: 'text' })
  downloadText(fileName(name, format), body, format === 'md' ? 'text/markdown' : 'text/plain')
}

const TEXT_FILE = /\.(md|markdown|mdown|txt|text|csv|tsv|log|json|ya?ml|toml|ini|cfg|conf|html?|xml|css|js|ts|py|rs|go|java|c|h|cpp|sh|rst|adoc|org|tex)$/i

/** A free name like `base`, `base (2)`, `base (3)`… */
async function freeName (base) {
  for (let n = 1; n < 100; n++) {
    const candidate = n === 1 ? base : `${base} (${n})`
    const access = await checkAccess(candidate)
    if (access.kind === 'missing') return candidate
    if (access.kind !== 'exists') throw new ApiError(access.kind === 'unauthorized' ? 401 : 403, access.code, access.message)
  }
  return `${base} (${Date.now()})`
}

/** Make a new document out of a text file; its name, or throws with a sentence. */
export async function uploadFile (file) {
  if (!(file.type.startsWith('text/') || TEXT_FILE.test(file.name) || file.type === 'application/json')) {
    throw new Error(`“${file.name}” is not a text file: upload Markdown or plain text.`)
  }
  const text = await file.text()
  if (text.includes('\u0000')) throw new Error(`“${file.name}” is not a text file: upload Markdown or plain text.`)
  const base = file.name.replace(/\.[^.]+$/, '').trim() || 'Uploaded document'
  try {
    const name = await freeName(base)
    await api(docPath(name, '/text?root=text'), {
      method: 'PUT',
      headers: { 'Content-Type': 'text/plain; charset=utf-8' },
      body: text
    })
    return name
  } catch (err) {
    throw new Error(explain(err))
  }
}
