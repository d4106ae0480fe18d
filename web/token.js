// Bearer tokens for protected streams, as the viewer and publish pages ask for them.

// A token for an endpoint: from the page's #token=... (never sent to the server in the URL),
// else from this tab's earlier answer to the prompt.
export function initialToken(url) {
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) {
    sessionStorage.setItem(`token:${url}`, fragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(`token:${url}`);
}

// The token form: on submit, keep the token for this tab, hide the form, and give it to `client`.
export function bindLogin(form, url, client) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = form.elements.token.value.trim();
    if (!token) return;
    sessionStorage.setItem(`token:${url}`, token);
    form.hidden = true;
    client.setToken(token);
  });
}
