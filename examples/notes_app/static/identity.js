// Before collab's editor loads in the frame: show the signed-in user's name to
// the others (the editor keeps your name and colour in localStorage under
// "collab.user"; same origin, so this page may set it).  A colour chosen in
// the editor is kept.
{
  const name = document.currentScript.dataset.name
  let saved = {}
  try { saved = JSON.parse(localStorage.getItem('collab.user') || '{}') || {} } catch {}
  if (name && saved.name !== name) {
    try { localStorage.setItem('collab.user', JSON.stringify({ ...saved, name })) } catch {}
  }
}
