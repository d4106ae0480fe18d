// Bearer tokens for protected streams, as the pages ask for them.
//
// A token is kept for this tab (sessionStorage), per endpoint and for the device as a whole: the
// token given to watch one stream is tried for the stream list, the controls and the other
// streams' pages too, until one of them asks for another.

const DEVICE = "token:device";

// A token for an endpoint: from the page's #token=... (never sent to the server in the URL),
// else from this tab's earlier answer to the prompt, for this endpoint or for the device.
export function initialToken(url) {
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) {
    sessionStorage.setItem(DEVICE, fragment);
    if (url) sessionStorage.setItem(`token:${url}`, fragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return (url && sessionStorage.getItem(`token:${url}`)) || sessionStorage.getItem(DEVICE);
}

export function keepToken(url, token) {
  sessionStorage.setItem(DEVICE, token);
  if (url) sessionStorage.setItem(`token:${url}`, token);
}

// The token form: on submit, keep the token for this tab, hide the form, and give it to `client`
// (anything with setToken(token)).
export function bindLogin(form, url, client) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = form.elements.token.value.trim();
    if (!token) return;
    keepToken(url, token);
    form.hidden = true;
    client.setToken(token);
  });
}
