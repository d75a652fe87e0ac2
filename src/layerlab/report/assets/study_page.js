// The study page's cell table: click a header to sort (numbers as numbers), type in a column's box to filter
// (a substring, or a comparison: >0.5, <=30, =ce); a row's log link opens that cell's log below.
(function () {
  const table = document.getElementById("cells");
  const body = table.tBodies[0];
  const headers = table.tHead.rows[0].cells;
  const inputs = table.tHead.rows[1].querySelectorAll("input");
  const rows = Array.from(body.rows);
  const key = (row, col) => row.cells[col].dataset.sort;

  function compare(a, b) {
    const x = parseFloat(a), y = parseFloat(b);
    if (a !== "" && b !== "" && !isNaN(x) && !isNaN(y)) return x - y;
    if (a === "" || b === "") return (a === "") - (b === "");  // empty cells last
    return a.localeCompare(b);
  }

  Array.from(headers).forEach((th, col) => th.addEventListener("click", () => {
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.from(headers).forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.slice().sort((a, b) => (ascending ? 1 : -1) * compare(key(a, col), key(b, col)))
      .forEach(row => body.appendChild(row));
  }));

  function matches(value, test) {
    const m = test.match(/^(<=|>=|<|>|=)\s*(.+)$/);
    if (!m) return value.toLowerCase().includes(test.toLowerCase());
    const [, op, operand] = m, x = parseFloat(value), y = parseFloat(operand);
    if (isNaN(x) || isNaN(y)) return op === "=" && value === operand;
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "=": x === y}[op];
  }

  function filter() {
    const tests = Array.from(inputs).map(input => input.value.trim());
    let shown = 0;
    rows.forEach(row => {
      const ok = tests.every((test, col) => !test || matches(row.cells[col].textContent.replace(/ log$/, ""), test));
      row.hidden = !ok;
      shown += ok;
    });
    document.getElementById("shown").textContent = `${shown} of ${rows.length} cells shown`;
  }
  inputs.forEach(input => input.addEventListener("input", filter));
  filter();

  document.querySelectorAll("a.log-link").forEach(link => link.addEventListener("click", () => {
    const details = document.getElementById(link.getAttribute("href").slice(1));
    if (details) details.open = true;
  }));
})();
