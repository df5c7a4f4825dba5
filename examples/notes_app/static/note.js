// The note page: the word count the app keeps with its on_change hook (asked
// every second) and the assistant's button.  The editor itself is collab's,
// in the frame: same origin, so the session cookie signs its socket in.

const main = document.querySelector('main.note')
const doc = main.dataset.doc
const count = document.getElementById('word-count')
const status = document.getElementById('assistant-status')
const button = document.getElementById('summarize')
const numbers = new Intl.NumberFormat('en')
const path = encodeURIComponent(doc)

async function refresh () {
  try {
    const response = await fetch(`/api/wordcount/${path}`, { cache: 'no-store' })
    if (response.status === 401 || response.status === 403) {
      count.textContent = 'no access'
      return // signed out or access revoked: no point asking again
    }
    if (response.ok) {
      const { words, authors } = await response.json()
      count.textContent = `${numbers.format(words)} word${words === 1 ? '' : 's'}`
      count.dataset.words = String(words)
      count.title = authors.length ? `last change by ${authors.join(', ')}` : ''
    }
  } catch {
    // the app is restarting: try again in a second
  }
  setTimeout(refresh, document.hidden ? 5000 : 1000)
}

refresh()

button?.addEventListener('click', async () => {
  button.disabled = true
  status.textContent = 'The assistant is reading…'
  try {
    const response = await fetch(`/assistant/${path}/summary`, { method: 'POST' })
    const body = await response.json()
    status.textContent = response.ok ? `Added: ${body.summary}` : `No summary: ${body.message}`
  } catch {
    status.textContent = 'The app cannot be reached.'
  } finally {
    button.disabled = false
  }
})
