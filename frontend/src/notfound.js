// The 404 page: says which address was not found and links home with the token kept.
import './style.css'
import { keepTokenInLinks } from './common.js'

document.getElementById('missing-path').textContent = location.pathname
keepTokenInLinks()
