/**
 * The few browser types that functions run in the page (`page.evaluate`, `waitForFunction`) use. The
 * project compiles without lib.dom, so the test files declare the browser globals they touch with these.
 */
export interface PageElement {
  id: string;
  textContent: string | null;
  dataset: Record<string, string | undefined>;
  getAttribute(name: string): string | null;
}

export interface PageAudio extends PageElement {
  paused: boolean;
  currentTime: number;
  duration: number;
}

export interface PageDocument {
  querySelector(selector: string): PageElement | null;
  activeElement: PageElement | null;
  documentElement: { scrollWidth: number };
}

export interface PageCanvas extends PageElement {
  width: number;
  height: number;
  getContext(kind: '2d'): {
    getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
  };
}
