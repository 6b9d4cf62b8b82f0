// Tell the ipywidgets HTML manager (embed-amd.js) where its font files are: beside it, in the book's
// own _static folder, rather than relative to each page.
window.__jupyter_widgets_assets_path__ = new URL("jupyter-widgets/", document.currentScript.src).href;
