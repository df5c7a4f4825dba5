// Modal dialogs (ask, confirm) on <dialog>, and popovers and menus that close
// on Escape or a click elsewhere.  Shared by the list and the editor.
import { h } from './common.js'

/**
 * A modal dialog; resolves with the entered value (prompt), true (confirm),
 * or null when cancelled.  `check(value)` returns an error message or null;
 * `submit(value)` may throw to keep the dialog open with its message shown.
 */
export function ask ({ title, body = null, label = null, value = '', confirm = 'OK', danger = false, check = null, submit = null }) {
  return new Promise((resolve) => {
    const input = label == null
      ? null
      : h('input', { type: 'text', class: 'dialog-input', value, 'aria-label': label, maxlength: '512', spellcheck: 'false' })
    const error = h('p', { class: 'dialog-error', role: 'alert', hidden: true })
    const ok = h('button', { type: 'submit', class: `button ${danger ? 'danger' : 'primary'}` }, confirm)
    const cancel = h('button', { type: 'button', class: 'button' }, 'Cancel')
    const form = h('form', { method: 'dialog', class: 'dialog-form' },
      h('h2', { class: 'dialog-title' }, title),
      body == null ? null : h('div', { class: 'dialog-body' }, body),
      input == null ? null : h('label', { class: 'dialog-label' }, label, input),
      error,
      h('div', { class: 'dialog-actions' }, cancel, ok)
    )
    const dialog = h('dialog', { class: 'dialog', 'aria-label': title }, form)
    document.body.append(dialog)
    let result = null
    const finish = () => { dialog.close(); dialog.remove(); resolve(result) }
    const showError = (message) => {
      error.textContent = message || ''
      error.hidden = !message
    }
    cancel.addEventListener('click', () => { result = null; finish() })
    dialog.addEventListener('cancel', (event) => { event.preventDefault(); result = null; finish() })
    if (input) input.addEventListener('input', () => showError(null))
    form.addEventListener('submit', async (event) => {
      event.preventDefault()
      const entered = input ? input.value.trim() : true
      const problem = input && check ? check(entered) : null
      if (problem) { showError(problem); input.focus(); return }
      if (submit) {
        ok.disabled = true
        try {
          await submit(entered)
        } catch (err) {
          ok.disabled = false
          showError(err.message || String(err))
          return
        }
      }
      result = entered
      finish()
    })
    dialog.showModal()
    if (input) { input.focus(); input.select() } else ok.focus()
  })
}

/**
 * Make `button` open and close `panel` (aria-expanded kept in step); Escape or a
 * click outside closes it.  Returns {open(bool), isOpen()}.
 */
export function popover (button, panel, { onOpen = null } = {}) {
  const isOpen = () => !panel.hidden
  const open = (want) => {
    panel.hidden = !want
    button.setAttribute('aria-expanded', String(want))
    if (want && onOpen) onOpen()
  }
  button.addEventListener('click', () => open(!isOpen()))
  panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') { open(false); button.focus() }
  })
  document.addEventListener('mousedown', (event) => {
    if (isOpen() && !panel.contains(event.target) && !button.contains(event.target)) open(false)
  })
  return { open, isOpen }
}

/**
 * A menu of actions for `button`: items are {label, run, danger?} or null for a
 * separator.  Arrow keys move between items, Escape closes.
 */
export function menu (button, items) {
  const panel = h('div', { class: 'menu', role: 'menu', hidden: true })
  const control = popover(button, panel, {
    onOpen: () => {
      const entries = typeof items === 'function' ? items() : items
      panel.replaceChildren(...entries.map((item) => item == null
        ? h('div', { class: 'menu-sep', role: 'separator' })
        : h('button', {
          type: 'button',
          role: 'menuitem',
          class: `menu-item${item.danger ? ' danger' : ''}`,
          onclick: () => { control.open(false); item.run() }
        }, item.label)))
      panel.querySelector('.menu-item')?.focus()
    }
  })
  panel.addEventListener('keydown', (event) => {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return
    event.preventDefault()
    const entries = [...panel.querySelectorAll('.menu-item')]
    const at = entries.indexOf(document.activeElement)
    const next = event.key === 'ArrowDown' ? (at + 1) % entries.length : (at - 1 + entries.length) % entries.length
    entries[next]?.focus()
  })
  button.setAttribute('aria-haspopup', 'menu')
  button.setAttribute('aria-expanded', 'false')
  button.after(panel)
  return control
}
