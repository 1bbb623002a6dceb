// The login page: posts the name and password as JSON; the answer sets the session cookie. Then back
// to the page that sent the browser here (only a path of this site: never an open redirect).
const form = document.getElementById("login");
const error = document.getElementById("login-error");
const name = document.getElementById("name");  // not form.name: that is the form's own name attribute
const password = document.getElementById("password");

function next() {
  const wanted = new URLSearchParams(location.search).get("next") ?? "/";
  return wanted.startsWith("/") && !wanted.startsWith("//") && !wanted.startsWith("/\\") ? wanted : "/";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const button = document.getElementById("login-submit");
  button.disabled = true;
  try {
    const response = await fetch("/api/auth/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: name.value.trim(), password: password.value }),
    });
    if (response.ok) {
      location.assign(next());
      return;
    }
    const wait = response.headers.get("Retry-After");
    error.textContent = response.status === 429 ? `Too many failed logins: try again in ${wait ?? "a few"} s.`
      : response.status === 401 ? "Wrong name or password." : `Login failed (${response.status}).`;
    password.value = "";
    password.focus();
  } catch (err) {
    error.textContent = `Cannot reach the controller: ${err.message}`;
  } finally {
    button.disabled = false;
  }
});
