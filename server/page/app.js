// Placeholder: the page helper's script replaces this file.
document.getElementById("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = new FormData(event.target).get("q");
  const answer = await (await fetch(`/search?q=${encodeURIComponent(q)}`)).json();
  const list = document.getElementById("hits");
  list.replaceChildren(...(answer.hits || []).map((hit) => {
    const item = document.createElement("li");
    item.textContent = `${hit.key}: ${hit.caption}`;
    return item;
  }));
});
